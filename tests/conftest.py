import os

pytest_plugins = ["tests.fix_db", "tests.fix_mqtt", "tests.fix_opcua", "tests.fix_timescale"]

# pytest-xdist's workers start with COLUMNS=80, and rich fixes a console's width for
# good when the console is made while COLUMNS is set (zhizao.cli.common makes them at
# import): without this, each CliRunner's own COLUMNS would be ignored and tables wrap.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
