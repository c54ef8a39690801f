# Real servers for the tests: install them when missing, start them on 127.0.0.1 on
# free high ports, export where they are, stop them on exit.
#
# Sourced by scripts/test (bash). Usage:
#   source scripts/test-servers.sh
#   need_packages etcd zookeeper     # what the tests need (see need_packages)
#   install_needed                   # one apt-get update + install, only if something is missing
#   start_etcd; start_zookeeper      # each exports REGISTRY_SYNC_TEST_<SERVER>
#
# Adding a server: one `start_<server>` function that starts it with `spawn_server`,
# waits with `wait_until`, and exports its REGISTRY_SYNC_TEST_<SERVER> variable; and
# its packages in `need_packages`. Every process started through `spawn_server` and
# every directory from `make_server_dir` is removed by the one EXIT trap below.

TEST_SERVER_PIDS=()
TEST_SERVER_DIRS=()
TEST_SERVER_PACKAGES=()

stop_test_servers() {
  local pid dir i deadline
  # Newest first, so a server stops before what it stands on (kube-apiserver before its
  # etcd). One that has not stopped within 15 s is killed: kube-apiserver's graceful
  # shutdown waits on its etcd for minutes once that is gone.
  for ((i = ${#TEST_SERVER_PIDS[@]} - 1; i >= 0; i--)); do
    kill "${TEST_SERVER_PIDS[i]}" 2>/dev/null || true
  done
  deadline=$((SECONDS + 15))
  for pid in "${TEST_SERVER_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  TEST_SERVER_PIDS=()
  for dir in "${TEST_SERVER_DIRS[@]}"; do
    rm -rf "$dir"
  done
  TEST_SERVER_DIRS=()
}
trap stop_test_servers EXIT

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "need root (or sudo) to run: $*" >&2
    return 1
  fi
}

# Queues the Debian packages of what is missing. Known names:
#   etcd       the etcd server and etcdctl
#   zookeeper  ZooKeeper 3.8 (runs on the machine's Java)
#   dnsmasq    dnsmasq-base: a DNS server serving SRV/A/AAAA records from a conf file
#   moto       python3 and its venv module, when moto is not installed yet (install_moto
#              then installs moto itself from PyPI)
#   chromium   Debian's chromium, run headless by the status page's browser test
#   openssl    generates the API server's service-account keys
#   maven      builds tools/spring (the Eureka server, the Spring Cloud clients)
need_packages() {
  local what
  for what in "$@"; do
    case "$what" in
      etcd)
        command -v etcd >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(etcd-server etcd-client)
        ;;
      dnsmasq)
        [ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(dnsmasq-base)
        ;;
      moto)
        if ! moto_server_path >/dev/null; then
          command -v python3 >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(python3)
          python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(python3-venv)
        fi
        ;;
      chromium)
        command -v chromium >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(chromium)
        ;;
      openssl)
        command -v openssl >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(openssl)
        ;;
      maven)
        command -v mvn >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(maven)
        command -v java >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(default-jdk-headless)
        ;;
      zookeeper)
        [ -f /usr/share/java/zookeeper.jar ] || TEST_SERVER_PACKAGES+=(zookeeper zookeeper-bin)
        command -v java >/dev/null 2>&1 || TEST_SERVER_PACKAGES+=(default-jre-headless)
        ;;
      *)
        echo "need_packages: unknown name $what" >&2
        return 1
        ;;
    esac
  done
}

# Installs everything queued, with one `apt-get update` first; nothing when all is there.
install_needed() {
  if [ "${#TEST_SERVER_PACKAGES[@]}" -eq 0 ]; then
    return 0
  fi
  echo "installing: ${TEST_SERVER_PACKAGES[*]}" >&2
  as_root apt-get update -qq
  # Installing never starts a daemon here; the tests start their own servers.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${TEST_SERVER_PACKAGES[@]}" >/dev/null
  TEST_SERVER_PACKAGES=()
}

# Prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# make_server_dir NAME: a new scratch directory in $SERVER_DIR, removed on exit. (Not
# printed: a command substitution would run it in a subshell and lose the cleanup entry.)
make_server_dir() {
  SERVER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/registry-sync-$1.XXXXXX")"
  TEST_SERVER_DIRS+=("$SERVER_DIR")
}

# spawn_server LOG COMMAND...: starts COMMAND in the background, output to LOG; its PID
# goes on the cleanup list and into $SPAWNED_PID.
spawn_server() {
  local log="$1"
  shift
  "$@" </dev/null >"$log" 2>&1 &
  SPAWNED_PID=$!
  TEST_SERVER_PIDS+=("$SPAWNED_PID")
}

# wait_until SECONDS WHAT PID LOG COMMAND...: polls COMMAND until it succeeds; fails
# (showing LOG) if PID exits or the time runs out.
wait_until() {
  local seconds="$1" what="$2" pid="$3" log="$4"
  shift 4
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what exited while starting; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$what was not ready after ${seconds}s; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# tcp_ask PORT REQUEST: sends REQUEST to 127.0.0.1:PORT and prints the answer.
tcp_ask() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf '%b' "$2" >&3
    timeout 2 cat <&3
  ) 2>/dev/null
}

etcd_healthy() { tcp_ask "$1" 'GET /health HTTP/1.0\r\n\r\n' | grep -q '"health":"true"'; }
zookeeper_ok() { tcp_ask "$1" 'ruok' | grep -q imok; }

start_etcd() {
  local dir client peer
  make_server_dir etcd
  dir="$SERVER_DIR"
  client="$(free_port)"
  peer="$(free_port)"
  spawn_server "$dir/etcd.log" etcd --name test --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "test=http://127.0.0.1:$peer"
  wait_until 30 etcd "$SPAWNED_PID" "$dir/etcd.log" etcd_healthy "$client"
  export REGISTRY_SYNC_TEST_ETCD="http://127.0.0.1:$client"
  echo "etcd: $REGISTRY_SYNC_TEST_ETCD (pid $SPAWNED_PID)" >&2
}

# Started as TESTING.md says: ZooKeeperServerMain directly (zkServer.sh hard-codes /etc
# paths), loopback only, and no admin server (it would open :8080 on every interface).
start_zookeeper() {
  local dir port
  make_server_dir zookeeper
  dir="$SERVER_DIR"
  port="$(free_port)"
  cat >"$dir/zoo.cfg" <<EOF
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr,mntr
maxClientCnxns=0
EOF
  spawn_server "$dir/zookeeper.log" java -Xmx256m -cp "$dir:/usr/share/java/zookeeper.jar" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg"
  wait_until 60 ZooKeeper "$SPAWNED_PID" "$dir/zookeeper.log" zookeeper_ok "$port"
  export REGISTRY_SYNC_TEST_ZOOKEEPER="127.0.0.1:$port"
  echo "zookeeper: $REGISTRY_SYNC_TEST_ZOOKEEPER (pid $SPAWNED_PID)" >&2
}

# dnsmasq reads its records only at start, so the DNS tests run private servers with
# their own records (TestDnsmasq in crates/sources/src/testing.rs). This one proves the
# binary serves on this machine: it answers an SRV query over TCP from a generated conf
# file, loopback only, records with a TTL of 1 s. Exports the binary's path.
start_dnsmasq() {
  local dir port binary
  binary="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
  make_server_dir dnsmasq
  dir="$SERVER_DIR"
  port="$(free_port)"
  cat >"$dir/dnsmasq.conf" <<EOF
port=$port
listen-address=127.0.0.1
bind-interfaces
local-ttl=1
local=/example/
srv-host=_http._tcp.probe.example,a.probe.example,8080
host-record=a.probe.example,127.0.0.2
EOF
  spawn_server "$dir/dnsmasq.log" "$binary" --no-resolv --no-hosts --keep-in-foreground \
    --pid-file= --user=root "--conf-file=$dir/dnsmasq.conf"
  wait_until 30 dnsmasq "$SPAWNED_PID" "$dir/dnsmasq.log" dnsmasq_answers "$port"
  export REGISTRY_SYNC_TEST_DNSMASQ="$binary"
  echo "dnsmasq: $binary, probe on 127.0.0.1:$port (pid $SPAWNED_PID)" >&2
}

# dnsmasq_answers PORT: an SRV query for the probe name over TCP gets one answer.
dnsmasq_answers() {
  python3 - "$1" <<'EOF'
import socket, struct, sys
name = b"".join(bytes([len(l)]) + l for l in b"_http._tcp.probe.example".split(b".")) + b"\0"
query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 33, 1)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(struct.pack(">H", len(query)) + query)
answer = s.recv(4096)
sys.exit(0 if len(answer) > 12 and struct.unpack(">H", answer[8:10])[0] == 1 else 1)
EOF
}

# moto, an AWS API emulator that serves Cloud Map, comes from PyPI (`moto[server]`). One
# already on PATH is used as it is; otherwise it goes into a virtualenv under the cache
# directory, which works where the system Python refuses `pip install` (PEP 668).
MOTO_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/registry-sync/moto-venv"

# Prints the moto_server to run; fails when there is none.
moto_server_path() {
  if command -v moto_server >/dev/null 2>&1; then
    command -v moto_server
  elif [ -x "$MOTO_VENV/bin/moto_server" ]; then
    echo "$MOTO_VENV/bin/moto_server"
  else
    return 1
  fi
}

install_moto() {
  if moto_server_path >/dev/null; then
    return 0
  fi
  echo "installing moto[server] into $MOTO_VENV (1-2 minutes)" >&2
  mkdir -p "$(dirname "$MOTO_VENV")"
  # A half-made virtualenv from an interrupted run is made again.
  rm -rf "$MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
  moto_server_path >/dev/null || {
    echo "moto was installed into $MOTO_VENV but has no moto_server" >&2
    return 1
  }
}

# moto_ready PORT: moto's own API answers on PORT.
moto_ready() { tcp_ask "$1" 'GET /moto-api/ HTTP/1.0\r\n\r\n' | grep -q '^HTTP/1.[01] 200'; }

# Loopback only. Tests that need a clean or a stoppable server start their own
# (TestMoto in crates/sources/src/testing/moto.rs) from the exported binary.
start_moto() {
  local dir port binary
  binary="$(moto_server_path)"
  make_server_dir moto
  dir="$SERVER_DIR"
  port="$(free_port)"
  spawn_server "$dir/moto.log" "$binary" -H 127.0.0.1 -p "$port"
  wait_until 60 moto "$SPAWNED_PID" "$dir/moto.log" moto_ready "$port"
  export REGISTRY_SYNC_TEST_MOTO="http://127.0.0.1:$port"
  export REGISTRY_SYNC_TEST_MOTO_SERVER="$binary"
  echo "moto: $REGISTRY_SYNC_TEST_MOTO (pid $SPAWNED_PID)" >&2
}

# rnacos, a Nacos server in Rust (1.x HTTP open API and 2.x gRPC), comes from crates.io:
# `cargo install` builds it, only when it is not already on PATH or in ~/.cargo/bin.
install_rnacos() {
  if command -v rnacos >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/rnacos" ]; then
    return 0
  fi
  echo "installing rnacos with cargo install: about 10 minutes on a fresh machine" >&2
  # Optimised less than a release build: half the build time (585 s against about 20
  # minutes on 2 cores), and the Nacos tests run as fast against it.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false cargo install rnacos --locked
}

# rnacos_ready PORT: the HTTP open API answers on PORT.
rnacos_ready() { tcp_ask "$1" 'GET /nacos/v1/ns/service/list HTTP/1.0\r\n\r\n' | grep -q '^HTTP/1'; }

# Loopback only, its data in a scratch directory (the defaults bind 0.0.0.0:8848 and
# write under ~/.local), the gRPC port at HTTP + 1000 as Nacos clients assume, and no
# TCP probe of persistent instances (tests register made-up addresses).
start_rnacos() {
  local dir http console binary
  binary="$(command -v rnacos || echo "$HOME/.cargo/bin/rnacos")"
  make_server_dir rnacos
  dir="$SERVER_DIR"
  http="$(free_port)"
  until [ "$http" -le 64535 ] && python3 -c "import socket; socket.socket().bind(('127.0.0.1', $http + 1000))" 2>/dev/null; do
    http="$(free_port)"
  done
  console="$(free_port)"
  spawn_server "$dir/rnacos.log" env RNACOS_HTTP_PORT="$http" RNACOS_GRPC_PORT="$((http + 1000))" \
    RNACOS_HTTP_CONSOLE_PORT="$console" RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1 \
    RNACOS_DATA_DIR="$dir/data" RNACOS_ENABLE_OPEN_API_AUTH=false RNACOS_ENV_FILE="$dir/no-env-file" \
    RNACOS_NAMING_PERPETUAL_INSTANCE_PROBE_INTERVAL_SECOND=86400 "$binary"
  wait_until 60 rnacos "$SPAWNED_PID" "$dir/rnacos.log" rnacos_ready "$http"
  export REGISTRY_SYNC_TEST_NACOS="127.0.0.1:$http"
  echo "rnacos: $REGISTRY_SYNC_TEST_NACOS, gRPC on $((http + 1000)) (pid $SPAWNED_PID)" >&2
}

# Programs built from Go modules: each tools/<name>/go.mod pins one program (and the
# modules it is built from); it is built once per content of that go.mod and go.sum
# into the cache below, so a second run builds nothing. A failed build fails the run.
TOOLS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/registry-sync/tools"

# go_tool_path NAME PACKAGE: where the build of PACKAGE from tools/NAME is cached.
go_tool_path() {
  local key
  key="$(cat "tools/$1/go.mod" "tools/$1/go.sum" | sha256sum | cut -c1-16)"
  echo "$TOOLS_CACHE/$1-$key/$(basename "$2")"
}

# build_go_tool NAME PACKAGE [LDFLAGS]: builds the command PACKAGE from the Go module
# tools/NAME into the cache, unless it is there already.
build_go_tool() {
  local name="$1" package="$2" ldflags="${3:-}" out started=$SECONDS
  out="$(go_tool_path "$name" "$package")"
  [ -x "$out" ] && return 0
  if ! command -v go >/dev/null 2>&1; then
    echo "building $package needs Go 1.26 or newer, and go is not on PATH" >&2
    return 1
  fi
  echo "building $(basename "$package") from the Go module proxy (tools/$name): once per version, minutes" >&2
  mkdir -p "$(dirname "$out")"
  if ! (cd "tools/$name" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -ldflags "-s -w $ldflags" -o "$out.partial" "$package"); then
    echo "building $package from tools/$name failed: the errors are above" >&2
    return 1
  fi
  mv "$out.partial" "$out"
  echo "built $out in $((SECONDS - started))s" >&2
  # Builds of earlier versions of the same module are not needed again.
  find "$TOOLS_CACHE" -mindepth 1 -maxdepth 1 -name "$name-*" ! -path "$(dirname "$out")" -exec rm -rf {} +
}

KUBE_VERSION_LDFLAGS="-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2"

install_kube_apiserver() {
  build_go_tool kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$KUBE_VERSION_LDFLAGS"
  build_go_tool kube-apiserver k8s.io/kubernetes/cmd/kubectl "$KUBE_VERSION_LDFLAGS"
}

# The Istio CRDs the API server validates against: ../shared/istio-crds when present
# (the pinned copy the project's stand-ins are checked against), else the same file of
# the istio.io/api module from the Go module proxy.
istio_crds_file() {
  local shared="../shared/istio-crds/serviceentry-workloadentry.crd.yaml" dir
  if [ -f "$shared" ]; then
    echo "$shared"
    return 0
  fi
  dir="$(cd / && go mod download -json istio.io/api@v1.32.0 | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  echo "$dir/kubernetes/customresourcedefinitions.gen.yaml"
}

# kube_ready KUBECONFIG: the API server answers /readyz with ok.
kube_ready() { "$KUBECTL" --kubeconfig "$1" get --raw /readyz 2>/dev/null | grep -qx ok; }

# write_kubeconfig FILE PORT CA TOKEN
write_kubeconfig() {
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:$2", certificate-authority: "$3"}}]
users: [{name: test, user: {token: "$4"}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: default}}]
current-context: test
KUBECONFIG
}

# The real kube-apiserver, as envtest runs it: loopback, a self-signed serving
# certificate, its own etcd (the etcd source's tests compact and wipe the shared one),
# service-account keys generated here, a static token file with an admin (in
# system:masters) and registry-sync's service account, RBAC authorization, and an audit
# log of every request (how the tests count writes on a real server). The Istio CRDs
# are installed. Exports REGISTRY_SYNC_TEST_KUBE: a directory with admin.kubeconfig,
# registry-sync.kubeconfig, audit.log, and what a private server needs (the binaries,
# keys, tokens and CRDs).
start_kube_apiserver() {
  local dir port etcd_client etcd_peer admin service_account
  KUBECTL="$(go_tool_path kube-apiserver k8s.io/kubernetes/cmd/kubectl)"
  make_server_dir kube-apiserver
  dir="$SERVER_DIR"
  etcd_client="$(free_port)"
  etcd_peer="$(free_port)"
  spawn_server "$dir/etcd.log" etcd --name kube --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "kube=http://127.0.0.1:$etcd_peer"
  wait_until 30 "etcd (for kube-apiserver)" "$SPAWNED_PID" "$dir/etcd.log" etcd_healthy "$etcd_client"
  openssl genrsa -out "$dir/service-account.key" 2048 2>/dev/null
  openssl rsa -in "$dir/service-account.key" -pubout -out "$dir/service-account.pub" 2>/dev/null
  admin="admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  service_account="sa-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  cat >"$dir/tokens.csv" <<TOKENS
$admin,admin,admin,"system:masters"
$service_account,system:serviceaccount:registry-sync:registry-sync,registry-sync,"system:serviceaccounts,system:serviceaccounts:registry-sync"
TOKENS
  cat >"$dir/audit-policy.yaml" <<POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
POLICY
  port="$(free_port)"
  spawn_server "$dir/kube-apiserver.log" "$(go_tool_path kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver)" \
    --etcd-servers "http://127.0.0.1:$etcd_client" \
    --cert-dir "$dir/certs" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/service-account.pub" \
    --service-account-signing-key-file "$dir/service-account.key" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
    --audit-log-mode blocking --audit-log-maxsize 0
  write_kubeconfig "$dir/admin.kubeconfig" "$port" "$dir/certs/apiserver.crt" "$admin"
  write_kubeconfig "$dir/registry-sync.kubeconfig" "$port" "$dir/certs/apiserver.crt" "$service_account"
  wait_until 120 kube-apiserver "$SPAWNED_PID" "$dir/kube-apiserver.log" kube_ready "$dir/admin.kubeconfig"
  "$KUBECTL" --kubeconfig "$dir/admin.kubeconfig" apply --server-side -f "$(istio_crds_file)" >/dev/null
  "$KUBECTL" --kubeconfig "$dir/admin.kubeconfig" wait --for condition=Established --timeout 60s \
    crd/serviceentries.networking.istio.io crd/workloadentries.networking.istio.io >/dev/null
  # What a test needs to start a private one (TestKubeApiServer) beside the shared one.
  ln -s "$KUBECTL" "$dir/kubectl"
  ln -s "$(go_tool_path kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver)" "$dir/kube-apiserver"
  ln -s "$(realpath "$(istio_crds_file)")" "$dir/istio-crds.yaml"
  export REGISTRY_SYNC_TEST_KUBE="$dir"
  echo "kube-apiserver: https://127.0.0.1:$port, kubeconfigs in $dir (pid $SPAWNED_PID)" >&2
}

# Helm, for `helm lint` and `helm template` of the chart. Exports REGISTRY_SYNC_TEST_HELM
# (the binary).
install_helm() {
  build_go_tool helm helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=v4.3.2"
  REGISTRY_SYNC_TEST_HELM="$(go_tool_path helm helm.sh/helm/v4/cmd/helm)"
  export REGISTRY_SYNC_TEST_HELM
}

# Java programs from tools/spring (a Maven project; Spring Boot 4.0.7, Spring Cloud
# 2025.1.4): a Eureka server, and applications that register through Spring Cloud's
# Eureka and ZooKeeper discovery clients. Built in a copy of the project (no build
# output in the clone) once per content of tools/spring, into the cache. Exports
# REGISTRY_SYNC_TEST_SPRING: the directory with eureka-server.jar, eureka-client.jar and
# zookeeper-client.jar.
install_spring_tools() {
  local key out work started=$SECONDS
  key="$(find tools/spring -type f -not -path '*/target/*' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)"
  out="$TOOLS_CACHE/spring-$key"
  if [ ! -f "$out/eureka-server.jar" ]; then
    if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
      echo "building tools/spring needs Maven and Java 17 or newer on PATH" >&2
      return 1
    fi
    echo "building the Eureka server and the Spring Cloud clients with Maven (tools/spring): once per version, a few minutes" >&2
    work="$(mktemp -d)"
    cp -r tools/spring/. "$work"
    if ! (cd "$work" && mvn -q -B -Dstyle.color=never -DskipTests package); then
      echo "building tools/spring with Maven failed: the errors are above" >&2
      rm -rf "$work"
      return 1
    fi
    rm -rf "$out.partial"
    mkdir -p "$out.partial"
    cp "$work"/*/target/*.jar "$out.partial/"
    rm -rf "$work"
    mv "$out.partial" "$out"
    find "$TOOLS_CACHE" -mindepth 1 -maxdepth 1 -name "spring-*" ! -path "$out" -exec rm -rf {} +
    echo "built $out in $((SECONDS - started))s" >&2
  fi
  export REGISTRY_SYNC_TEST_SPRING="$out"
}

# eureka_ready PORT: the Eureka server lists its applications.
eureka_ready() { tcp_ask "$1" 'GET /eureka/apps HTTP/1.0\r\nAccept: application/json\r\n\r\n' | grep -q '^HTTP/1.[01] 200'; }

# The real Eureka server (Spring Cloud Netflix), loopback only, set up for tests that
# see a change at once: no read-only response cache (else up to 30 s stale), no
# self-preservation, eviction every second; it neither registers with nor fetches from
# a peer. Tests that need Eureka's defaults start a private one. Exports
# REGISTRY_SYNC_TEST_EUREKA (its /eureka URL).
start_eureka() {
  local dir port
  make_server_dir eureka
  dir="$SERVER_DIR"
  port="$(free_port)"
  spawn_server "$dir/eureka.log" java -Xmx256m -jar "$REGISTRY_SYNC_TEST_SPRING/eureka-server.jar" \
    --server.address=127.0.0.1 --server.port="$port" --spring.main.banner-mode=off \
    --eureka.client.register-with-eureka=false --eureka.client.fetch-registry=false \
    --eureka.server.enable-self-preservation=false --eureka.server.use-read-only-response-cache=false \
    --eureka.server.eviction-interval-timer-in-ms=1000
  wait_until 120 Eureka "$SPAWNED_PID" "$dir/eureka.log" eureka_ready "$port"
  export REGISTRY_SYNC_TEST_EUREKA="http://127.0.0.1:$port/eureka"
  echo "eureka: $REGISTRY_SYNC_TEST_EUREKA (pid $SPAWNED_PID)" >&2
}

# istiod (pilot-discovery) from istio.io/istio, pinned in tools/istiod.
install_istiod() {
  build_go_tool istiod istio.io/istio/pilot/cmd/pilot-discovery \
    "-X istio.io/istio/pkg/version.buildVersion=1.31-dev+eed52ebb66ad"
  REGISTRY_SYNC_TEST_ISTIOD_BIN="$(go_tool_path istiod istio.io/istio/pilot/cmd/pilot-discovery)"
  export REGISTRY_SYNC_TEST_ISTIOD_BIN
}
