"""`python -m openhands_conversations_client`: the same as the `convo` command."""

import sys

from openhands_conversations_client.cli import main

sys.exit(main())
