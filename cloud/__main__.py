"""`python -m cloud`: start the cloud in the foreground until SIGINT or SIGTERM."""

import sys

from cloud.launcher import main

sys.exit(main())
