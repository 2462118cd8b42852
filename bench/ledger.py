#!/usr/bin/env python3
"""The grant latency with the PostgreSQL ledger beside SQLite, in one run.

Makes a PostgreSQL cluster on loopback (PostgreSQL's defaults: fsync and synchronous
commits on, as an operator gets it; tests/e2e/pgcluster.py), then runs
`bench/lease_cycle --ledger URL`: a zerogpud on SQLite and one on that PostgreSQL, taking
turns, single-client acquire/release cycles. Usage: bench/ledger.py [--build DIR]
[--cycles N]. Prints what lease_cycle measured; removes the cluster after."""
import argparse
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from pgcluster import PgCluster, available  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--cycles", type=int, default=10000)
    args = ap.parse_args()
    why = available()
    if why:
        sys.exit(f"bench/ledger.py: {why}")
    pg = PgCluster().start(durable=True)
    try:
        db = pg.database()
        version = pg.psql("SHOW server_version")[0][0]
        print(f"PostgreSQL {version} on 127.0.0.1:{pg.port}, fsync and synchronous_commit on")
        r = subprocess.run([os.path.join(args.build, "bench", "lease_cycle"), "--ledger",
                            pg.url(db), "--cycles", str(args.cycles)])
        return r.returncode
    finally:
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
