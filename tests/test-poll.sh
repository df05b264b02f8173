#!/usr/bin/env bash
# tests/test-poll.sh: server.poll-max-ns keeps the loop awake after a
# client's bytes arrive.  A client reading one block at a time (queue
# depth 1) finds the loop awake with polling on: the loop thread hardly
# ever blocks (voluntary context switches, /proc) however many reads it
# answers, while with poll-max-ns 0 it blocks in the poll between every
# two reads.  A reload changes the value live (one retune-server step)
# and dump-config writes it back.  Data is checked on every read.
source "$srcdir/functions.sh"
set -e -x
python_with "import nbd"                # Debian's python3-libnbd

reads=2000
start_nbdgraphd '
server:
  listen: [ "unix:@SOCK@" ]
  control: "@CONTROL@"
  poll-max-ns: 1000000000
nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m, writable: true }
'
conf=$dir/config.yaml

# The loop is the daemon's main thread: its TID is the PID.  Connect,
# write a pattern, then count how often the loop blocked while it
# answered $reads reads of one block each.
burst () {
    "$py" -c '
import nbd, sys
uri, reads, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def blocks():
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
h = nbd.NBD()
h.connect_uri(uri)
block = bytes(range(256)) * 16
h.pwrite(block, 8192)
before = blocks()
for i in range(reads):
    if h.pread(4096, 8192) != block:
        sys.exit(f"read {i}: wrong data")
print(blocks() - before)
h.shutdown()
' "$(uri_for demo)" "$reads" "$nbdgraphd_pid"
}

spun=$(burst)
echo "poll-max-ns 1 s: the loop blocked $spun times in $reads reads"
[ "$spun" -lt $((reads / 20)) ]

# Off, by reload: one retune-server step, then the loop sleeps between
# reads again.
sed -i 's/poll-max-ns: 1000000000/poll-max-ns: 0/' "$conf"
nbdgraphctl reload --dry-run | tee "$dir/plan"
grep -q 'retune-server.*poll-max-ns 1000000000 -> 0' "$dir/plan"
nbdgraphctl reload | grep -q 'applied 1 step(s)'
slept=$(burst)
echo "poll-max-ns 0: the loop blocked $slept times in $reads reads"
[ "$slept" -ge $((reads / 2)) ]

nbdgraphctl dump-config > "$dir/dump.yaml"
grep -q 'poll-max-ns: 0' "$dir/dump.yaml"
nbdgraphctl reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'
stop_nbdgraphd
