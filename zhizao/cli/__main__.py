from zhizao.cli import main

main()
