"""The factory simulator: OPC UA machines and robots, MQTT devices, scenarios, ground truth.

``run_simulator`` (in :mod:`.run`) is what ``zhizao sim run`` and ``zhizao demo`` start;
the formats are described in ``edge/simulator/README.md``.
"""
