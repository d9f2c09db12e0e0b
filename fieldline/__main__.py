from fieldline.cli import main

main()
