from grace.cli.main import main

main()
