# Sourced by the demo and the benchmarks: cgroup paths below this shell's own cgroup.

# The deepest of this process's cgroup paths (one path valid below every hierarchy).
own_cgroup() {
  awk -F: '{print $3}' /proc/self/cgroup | awk '{print length, $0}' | sort -n | tail -1 | cut -d' ' -f2-
}

# Removes cgroup $1 (and everything below it) in every hierarchy, then the parents created
# for it: only directories strictly below this shell's own cgroup of that hierarchy, and
# only while empty.
remove_cgroup_tree() {
  local cg=$1 ctrls own m p
  while IFS=: read -r _ ctrls own; do
    m=/sys/fs/cgroup/${ctrls#name=}; [ -z "$ctrls" ] && m=/sys/fs/cgroup/unified
    [ -f /sys/fs/cgroup/cgroup.controllers ] && m=/sys/fs/cgroup
    [ -d "$m$cg" ] && find "$m$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    p=$(dirname "$cg")
    while [ "${p#"${own%/}"/}" != "$p" ] && [ "$p" != / ]; do
      [ -d "$m$p" ] && { rmdir "$m$p" 2>/dev/null || break; }
      p=$(dirname "$p")
    done
  done < /proc/self/cgroup
}
