"""Ask a saved MVaEMa about one micrograph or a folder of them (the `mvaema-predict` command).

    python predict.py --model outputs/mvaema/model --image micrograph.jpg \
        --question "Describe the overall shape and morphology of the nanomaterials."
    python predict.py --model outputs/mvaema/model --images data/SEM --out predictions.jsonl

`python predict.py --help` lists every option.
"""

import sys

from inference.predict import main

if __name__ == "__main__":
    sys.exit(main())
