from integration.ops.cli import main

main()
