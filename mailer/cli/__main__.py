"""python -m mailer.cli"""

from mailer.cli import main

main()
