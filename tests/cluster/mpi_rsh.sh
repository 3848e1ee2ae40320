#!/bin/sh
# tests/cluster/mpi_rsh.sh - Open MPI's remote-shell agent for the cluster
# of network-namespace hosts (plm_rsh_agent): "mpi_rsh.sh hK cmd..." runs
# cmd on host K (or "mpi_rsh.sh 10.233.K.2 cmd..."), that is in its
# namespace, as ssh would on a real host.
# DML_MPI_NS: the namespaces' name without the host number (run.sh sets
# it: dmlc<ID>h). Used by run.sh mpi (docs/cluster.md, "Launch by MPI").
set -eu
while [ $# -gt 0 ]; do # ssh-style options Open MPI may put first
	case $1 in
	-x | -n | -q | -T) shift ;;
	-*) shift 2 ;;
	*) break ;;
	esac
done
host=$1
shift
# host K is hK or its address 10.233.K.2 (addresses need no name lookup)
k=${host#h}
case $host in 10.233.*.2) k=${host#10.233.}; k=${k%.2} ;; esac
case $k in
'' | *[!0-9]*) echo "mpi_rsh: host $host: expected hK" >&2; exit 1 ;;
esac
exec ip netns exec "${DML_MPI_NS:?}$k" sh -c "$*"
