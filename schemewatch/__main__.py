from schemewatch.cli import main

main()
