import sys

from jobs.streaming.pipeline import main

main(sys.argv[1:])
