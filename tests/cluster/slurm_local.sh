#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + munge, Debian packages) without
# systemd, for `make test-cluster`. Adapted from ../shared/reference/slurm/slurm_local.sh.
#   slurm_local.sh install|config|start|stop|status|clean      (root)
# One node with this machine's CPUs and memory and a fake GPU (Gres=gpu:1 on /dev/null) so
# that `sbatch --gpus=1` jobs schedule. State lives under $BASE; slurm.conf and gres.conf are
# also linked into /etc/slurm/ (the jobstep plugin drops SLURM_CONF before its inner srun).
# Pitfall: with snakemake-executor-plugin-slurm installed, every snakemake call runs
# `scontrol show config` at import; with /etc/slurm/slurm.conf present but no controller up
# that takes ~10 s. `clean` therefore removes the /etc/slurm links after the test.
# Daemons are stopped by the PIDs in their pid files, never by name.
set -euo pipefail
BASE=${BASE:-/tmp/neopain-slurm}
NODE=$(hostname -s)
export SLURM_CONF=$BASE/etc/slurm.conf
MUNGE_SOCK=$BASE/munge/munge.socket.2
PKGS="slurmctld slurmd slurm-client munge"

install() {
  if dpkg-query -W -f='${Status}\n' $PKGS 2>/dev/null | grep -qv "install ok installed" \
     || [ "$(dpkg-query -W -f='${Status}\n' $PKGS 2>/dev/null | wc -l)" -lt 4 ]; then
    if ! apt-cache policy slurmctld 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS \
      >/dev/null
  fi
  # The Debian packages start nothing without systemd; make sure of it.
  dpkg-query -W -f='${Package} ${Version}\n' $PKGS
}

config() {
  mkdir -p $BASE/{etc,state,spool,log,munge}
  chown munge:munge $BASE/munge; chmod 0755 $BASE/munge
  local C CPUS MEM
  C=$(slurmd -C | head -1)
  CPUS=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$C")
  MEM=$(sed -E 's/.* RealMemory=([0-9]+).*/\1/' <<<"$C")
  MEM=$((MEM - 512))
  cat > $SLURM_CONF <<CONF
ClusterName=neopain
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
MinJobAge=900
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
  cat > $BASE/etc/gres.conf <<CONF
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
CONF
  mkdir -p /etc/slurm
  ln -sf $SLURM_CONF /etc/slurm/slurm.conf
  ln -sf $BASE/etc/gres.conf /etc/slurm/gres.conf
}

start() {
  runuser -u munge -- /usr/sbin/munged --socket=$MUNGE_SOCK \
     --pid-file=$BASE/munge/munged.pid --log-file=$BASE/munge/munged.log \
     --seed-file=$BASE/munge/munged.seed
  munge -S $MUNGE_SOCK -n | unmunge -S $MUNGE_SOCK >/dev/null
  /usr/sbin/slurmctld -f $SLURM_CONF -i
  /usr/sbin/slurmd -f $SLURM_CONF
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$(cat $BASE/slurmctld.pid 2>/dev/null || echo 0)" 2>/dev/null; then
      sleep 1   # pid file not written yet, or slurmctld died: look at its log
      kill -0 "$(cat $BASE/slurmctld.pid 2>/dev/null || echo 0)" 2>/dev/null || {
        echo "slurmctld is not running:" >&2; tail -5 $BASE/log/slurmctld.log >&2; exit 1; }
    fi
    if timeout 5 sinfo -h -o '%t' 2>/dev/null | grep -qE '^idle'; then break; fi
    sleep 0.5
  done
  timeout 5 sinfo -h -o '%t' | grep -qE '^idle' || {
    echo "slurm node not idle" >&2; tail -5 $BASE/log/slurmctld.log >&2; exit 1; }
  echo "slurm up: $(sinfo -h -o '%P %D %t %G')"
}

_kill_pidfile() {  # kill the daemon whose pid file is $1, wait for it to exit
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  _kill_pidfile $BASE/slurmd.pid
  _kill_pidfile $BASE/slurmctld.pid
  _kill_pidfile $BASE/munge/munged.pid
}

clean() {
  stop
  # only our own links: a real /etc/slurm/slurm.conf is left alone
  for f in slurm.conf gres.conf; do
    if [ -L /etc/slurm/$f ] && [[ "$(readlink /etc/slurm/$f)" == $BASE/* ]]; then
      rm -f /etc/slurm/$f
    fi
  done
  rm -rf $BASE
}

status() { sinfo; squeue; scontrol show node $NODE | grep -E 'Gres|State|CfgTRES'; }

"$@"
