"""The edge collector: reads OPC UA and MQTT devices on the factory floor, normalises
everything to the uplink contract (:mod:`zhizao.wire`), keeps it in a disk spool and
publishes it to the platform broker. The edge never talks to the database.
"""
