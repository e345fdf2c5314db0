import sys

from gpu_container.worker.main import main

sys.exit(main())
