from hpctl.cli import main

main()
