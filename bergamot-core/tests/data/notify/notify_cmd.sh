#!/bin/sh
# The command channel's test program: notify_cmd.sh OUTDIR MODE
#   ok:   saves stdin to OUTDIR/stdin.json and the environment to OUTDIR/env.txt
#   fail: complains on stderr and exits 3
#   hang: starts a grandchild (its pid in OUTDIR/child.pid) and waits forever
out="$1"
case "$2" in
  ok)
    cat > "$out/stdin.json"
    env > "$out/env.tmp" && mv "$out/env.tmp" "$out/env.txt"
    exit 0 ;;
  fail)
    echo "pager gateway said no" >&2
    echo "second line" >&2
    exit 3 ;;
  hang)
    sleep 1000 &
    echo $! > "$out/child.tmp" && mv "$out/child.tmp" "$out/child.pid"
    wait ;;
esac
exit 99
