from fedkd.cli import main

main()
