from lexrerank.cli import main

main()
