#!/usr/bin/env bash
# tests/test-poll.sh: server.poll-max-ns keeps the loop awake after a
# client's bytes arrive.  A client reading one block at a time (queue
# depth 1) finds the loop awake with polling on: the loop thread hardly
# ever blocks (voluntary context switches, /proc) however many reads it
# answers, while with poll-max-ns 0 it blocks in the poll between every
# two reads.  Unless the loop's core is shared: with a busy loop per CPU
# (nice 0) the kernel keeps preempting the loop (involuntary switches)
# and the loop stops polling: it sleeps after the last read.  (On a
# machine busy with other work the first burst may see the same: then
# it says so instead of checking the count.)  A reload changes the
# value live (one retune-server step) and dump-config writes it back.
# Data is checked on every read.
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
# answered $reads reads of one block each and how often it was
# preempted meanwhile, then the CPU time (clock ticks) it used in the
# half second after the last one (a loop that polls spins through it).
burst () {
    "$py" -c '
import nbd, sys, time
uri, reads, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def switches(kind):
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith(kind + "_ctxt_switches"):
                return int(line.split()[1])
def blocks():
    return switches("voluntary")
def ticks():
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])          # utime + stime
h = nbd.NBD()
h.connect_uri(uri)
block = bytes(range(256)) * 16
h.pwrite(block, 8192)
# Preemptions from a pause on: one before it stops polling only until
# the pause is over (200 ms).
pre = switches("nonvoluntary")
time.sleep(0.3)
before = blocks()
for i in range(reads):
    if h.pread(4096, 8192) != block:
        sys.exit(f"read {i}: wrong data")
print(blocks() - before, switches("nonvoluntary") - pre, end=" ")
t = ticks()
time.sleep(0.5)
print(ticks() - t)
h.shutdown()
' "$(uri_for demo)" "$reads" "$nbdgraphd_pid"
}

read -r spun preempted spin <<< "$(burst)"
echo "poll-max-ns 1 s: the loop blocked $spun times in $reads reads" \
     "(preempted $preempted times), $spin ticks in the pause after"
if [ "$preempted" -lt 2 ]; then   # fewer than stop polling
    [ "$spun" -lt $((reads / 20)) ]
else
    echo "the loop's core was shared meanwhile: polling may step back"
fi

# A busy loop on every CPU: the loop's core is shared, it stops polling.
hogs=()
for i in $(seq "$(nproc)"); do
    sh -c 'while :; do :; done' &
    hogs+=($!)
done
read -r shared preempted spin <<< "$(burst)"
kill "${hogs[@]}"
echo "poll-max-ns 1 s, every core busy: the loop blocked $shared times" \
     "in $reads reads (preempted $preempted times), $spin ticks after"
[ "$spin" -lt 5 ]                       # of 50: it slept, no polling

# Off, by reload: one retune-server step, then the loop sleeps between
# reads again.
sed -i 's/poll-max-ns: 1000000000/poll-max-ns: 0/' "$conf"
nbdgraphctl reload --dry-run | tee "$dir/plan"
grep -q 'retune-server.*poll-max-ns 1000000000 -> 0' "$dir/plan"
nbdgraphctl reload | grep -q 'applied 1 step(s)'
read -r slept preempted spin <<< "$(burst)"
echo "poll-max-ns 0: the loop blocked $slept times in $reads reads"
[ "$slept" -ge $((reads / 2)) ]

nbdgraphctl dump-config > "$dir/dump.yaml"
grep -q 'poll-max-ns: 0' "$dir/dump.yaml"
nbdgraphctl reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'
stop_nbdgraphd
