"""The names of the files inside a dataset folder ``<root>/datasets/<name>/`` (see :mod:`.store` for what each holds).

A module of its own so that the store and the modules it uses (verify, query, repair) all read the layout from
one place without importing each other.
"""

INFO_FILE = "meta/info.json"
META_DIR = "meta"
SNAPSHOT_FILE = "meta/snapshot.json"
LOCK_FILE = "meta/commit.lock"
DATA_DIR = "data"
MANIFESTS_DIR = "manifests"
REJECTS_DIR = "rejects"
CANDIDATES_DIR = "candidates"
PART_FILE = DATA_DIR + "/{part}.{write_id}.parquet"
COMPACT_FILE = DATA_DIR + "/c-{snapshot}-{n:03d}.parquet"
MANIFEST_FILE = MANIFESTS_DIR + "/{key}.json"
REJECTS_FILE = REJECTS_DIR + "/{key}.parquet"
CANDIDATES_FILE = CANDIDATES_DIR + "/{source}/{key}.parquet"
# Written into meta/info.json, so a reader of the folder learns its layout from the folder itself.
LAYOUT = {"info": INFO_FILE, "snapshot": SNAPSHOT_FILE, "index": "meta/index.{snapshot}.parquet",
          "manifest": MANIFEST_FILE, "data": PART_FILE, "compacted": COMPACT_FILE, "rejects": REJECTS_FILE,
          "candidates": CANDIDATES_FILE}
