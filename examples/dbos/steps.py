# DBOS Transact (Python): time per new checkpointed step on the local PostgreSQL, the reference
# the README compares idem with. Run: python3 -m venv v && v/bin/pip install dbos &&
#   psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE dbos_bench" && v/bin/python examples/dbos/steps.py 1000
import sys, time, uuid
from dbos import DBOS, DBOSConfig, SetWorkflowID

config: DBOSConfig = {
    "name": "idem-compare",
    "system_database_url": "postgresql://postgres@127.0.0.1:5432/dbos_bench?sslmode=disable",
}
DBOS(config=config)

@DBOS.step()
def draft(i: int) -> dict:
    return {"title": f"draft {i}", "tokens": 512}

@DBOS.workflow()
def pipeline(n: int) -> int:
    for i in range(n):
        draft(i)
    return n

DBOS.launch()
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
pipeline(10)  # warm up
for r in range(3):
    wid = str(uuid.uuid4())
    t = time.perf_counter()
    with SetWorkflowID(wid):
        pipeline(n)
    new = (time.perf_counter() - t) / n
    t = time.perf_counter()
    with SetWorkflowID(wid):
        pipeline(n)
    again = time.perf_counter() - t
    print(f"round {r}: {new*1000:.3f} ms per new checkpointed step ({n} steps in one workflow); "
          f"calling the finished workflow again: {again*1000:.3f} ms")
DBOS.destroy()
