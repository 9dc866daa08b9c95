from dppp.cli import run

run()
