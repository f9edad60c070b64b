"""Finding bad training labels from Python (paper section 6.2), on the files of
``seginf corpus --out DIR`` and ``seginf train``:

    seginf corpus --out noise
    seginf train --train noise/train.conll --features noise/train.npy --constraints \\
        --l2 1e-3 --out noise/model.safetensors
    python python/examples/find_bad_labels.py noise

It indexes the training set with the CRF, ranks the training documents with every method, and
prints how many of the systematic-noise documents (``noise.tsv``) each finds in its top 50.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

import seginf


def read_conll(path, labels):
    """Documents of sentences of label ids: a minimal CoNLL reader (word first, label last,
    blank lines between sentences, -DOCSTART- between documents)."""
    ids = {name: i for i, name in enumerate(labels)}
    docs, sentence = [[]], []
    for line in Path(path).read_text().splitlines() + [""]:
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if sentence:
                docs[-1].append(np.array(sentence, dtype=np.uint32))
                sentence = []
            if cols and docs[-1]:
                docs.append([])
            continue
        sentence.append(ids[cols[-1]])
    return [d for d in docs if d]


def model_labels(path):
    """The label names `seginf train` stores in the model file's safetensors metadata."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return json.loads(header["__metadata__"]["labels"])


def sequences(docs, features):
    """(doc_id, features, labels) per sentence, doc_id = document << 32 | sentence (the CLI's
    encoding), features sliced from the file's rows without copying."""
    at = 0
    for d, sentences in enumerate(docs):
        for s, y in enumerate(sentences):
            yield (d << 32) | s, features[at : at + len(y)], y
            at += len(y)


def main(folder):
    folder = Path(folder)
    labels = model_labels(folder / "model.safetensors")
    train = read_conll(folder / "train.conll", labels)
    clean = read_conll(folder / "clean.conll", labels)
    x_train = np.load(folder / "train.npy")
    x_clean = np.load(folder / "clean.npy")
    rows = [line.split("\t") for line in (folder / "noise.tsv").read_text().splitlines()[1:]]
    systematic = {int(row[0]) for row in rows if row[1] == "true"}  # document, systematic_noise

    with seginf.Crf.load_safetensors(folder / "model.safetensors") as crf:
        builder = seginf.IndexBuilder(crf)
        for doc_id, x, y in sequences(train, x_train):
            builder.add(doc_id, x, y)
        clean_set = [(x, y) for _, x, y in sequences(clean, x_clean)]
        with builder.finish() as index, index.query() as q:
            print(f"{index.num_tokens} training tokens; clean set: {len(clean_set)} sentences")
            print(f"systematic-noise documents ({len(systematic)}) in each method's top 50:")
            for method in seginf.RankMethod:
                _, docs = q.rank_training(method, clean=clean_set, top=10, doc_id_shift=32)
                found = sum(int(d) in systematic for d in docs["doc_id"][:50])
                print(f"  {method.name.lower():24} {found:3}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "noise")
