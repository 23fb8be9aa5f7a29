from meterflow.cli.main import main

main()
