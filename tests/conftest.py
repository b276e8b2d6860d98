pytest_plugins = ["tests.fix_db", "tests.fix_mqtt", "tests.fix_opcua", "tests.fix_timescale"]
