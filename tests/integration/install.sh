# meson install into a temp root: the files an installed fleetgate needs,
# at their paths with their modes; the example configs never overwrite an
# edited one; the systemd units pass `systemd-analyze verify` and
# fleetgated.service stays at an exposure of 2.0 or less; and the installed
# binaries, started from that root with the installed config example and
# plugins, enroll an agent.
source "$(dirname "$0")/lib.sh"

R="$T/root"
meson install -C "$FG_BUILD" --destdir "$R" --no-rebuild >"$T/install.log" 2>&1 ||
  die "meson install failed: $(tail -n 20 "$T/install.log")"

# mode PATH: its permission bits, octal
mode() { stat -c %a "$1"; }
expect_file() { # expect_file PATH MODE
  if [ -f "$R$1" ]; then expect_eq "$1 mode" "$(mode "$R$1")" "$2"; else fail "$1 is not installed"; fi
}

expect_file "$FG_BINDIR/fleetgate" 755
expect_file "$FG_BINDIR/fleetgate-agent" 755
expect_file "$FG_SBINDIR/fleetgated" 755
check "fleetgated is not in bindir" test ! -e "$R$FG_BINDIR/fleetgated"
if [ "$FG_INSTALL_BENCH" = true ]; then
  expect_file "$FG_BINDIR/fleetgate-bench" 755
else
  check "fleetgate-bench is not installed without -Dbench=true" test ! -e "$R$FG_BINDIR/fleetgate-bench"
fi
for p in local acme scep est; do expect_file "$FG_PLUGINDIR/fleetgate-$p.so" 755; done
expect_file "$FG_SYSCONFDIR/fleetgated.conf" 644
expect_file "$FG_SYSCONFDIR/agent.conf" 644
expect_file "$FG_UNITDIR/fleetgated.service" 644
expect_file "$FG_UNITDIR/fleetgate-agent.service" 644
expect_file "$FG_UNITDIR/fleetgate-agent@.service" 644
expect_file "$FG_SYSUSERSDIR/fleetgate.conf" 644
expect_file "$FG_TMPFILESDIR/fleetgate.conf" 644
expect_file "$FG_INCLUDEDIR/fleetgate/plugin.h" 644
expect_file "$FG_PCDIR/fleetgate-plugin.pc" 644
expect_file "$FG_SHAREDIR/policies/default.lua" 644
expect_file "$FG_SHAREDIR/policies/default.tests.json" 644
expect_file "$FG_SHAREDIR/policies/examples/by-group.lua" 644
expect_file "$FG_DOCDIR/README.md" 644
expect_file "$FG_DOCDIR/security.md" 644
expect_file "$FG_BASHCOMPDIR/fleetgate" 644
if [ "$FG_MAN" = true ]; then
  for m in man1/fleetgate.1 man8/fleetgated.8 man8/fleetgate-agent.8 man5/fleetgated.conf.5 \
           man5/fleetgate-agent.conf.5 man7/fleetgate-policy.7 man1/fleetgate-bench.1; do
    expect_file "$FG_MANDIR/$m" 644
  done
fi
expect_match "the units name the installed fleetgated" \
  "$(cat "$R$FG_UNITDIR/fleetgated.service")" "^ExecStart=$FG_SBINDIR/fleetgated --state $FG_STATEDIR/fleetgate\$"
PLUGINDIR_PC=$(PKG_CONFIG_PATH="$R$FG_PCDIR" pkg-config --variable=plugindir fleetgate-plugin)
expect_eq "the pkg-config file names the plugin directory" "$PLUGINDIR_PC" "$FG_PLUGINDIR"

# An edited config survives the next install.
echo "-- edited by the operator" >>"$R$FG_SYSCONFDIR/fleetgated.conf"
meson install -C "$FG_BUILD" --destdir "$R" --no-rebuild >"$T/install2.log" 2>&1 || die "second meson install failed"
expect_match "a second install keeps the edited fleetgated.conf" \
  "$(tail -n 1 "$R$FG_SYSCONFDIR/fleetgated.conf")" "^-- edited by the operator\$"

# The units, checked by systemd (not run): paths under the temp root.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$T/units"
  for u in fleetgated.service fleetgate-agent.service fleetgate-agent@.service; do
    sed "s|^ExecStart=/|ExecStart=$R/|" "$R$FG_UNITDIR/$u" >"$T/units/$u"
  done
  cp "$T/units/fleetgate-agent@.service" "$T/units/fleetgate-agent@web.service"
  out=$(cd "$T/units" && systemd-analyze verify --man=no fleetgated.service fleetgate-agent.service \
        fleetgate-agent@web.service 2>&1) && ok "systemd-analyze verify passes on the units" ||
    fail "systemd-analyze verify: $out"
  # The same check catches a broken unit (so the pass above means something).
  sed "s|^ExecStart=$R/|ExecStart=$R/nonexistent/|" "$T/units/fleetgated.service" >"$T/units/broken.service"
  if (cd "$T/units" && systemd-analyze verify --man=no broken.service >/dev/null 2>&1); then
    fail "systemd-analyze verify accepted a unit whose binary is missing"
  else
    ok "systemd-analyze verify refuses a unit whose binary is missing"
  fi
  sec=$(systemd-analyze security --offline=yes --threshold=20 "$T/units/fleetgated.service" 2>&1) &&
    ok "fleetgated.service exposure <= 2.0 ($(grep -o 'exposure level.*' <<<"$sec"))" ||
    fail "fleetgated.service exposure above 2.0: $(tail -n 1 <<<"$sec")"
else
  fail "systemd-analyze not found (Debian package systemd)"
fi

# The installed tree, started from the temp root: the installed example
# config linked into a state directory as tmpfiles.d does, init keeping it.
unset FLEETGATE_PLUGIN_DIR
S="$T/var/fleetgate"
mkdir -p "$S"
PORT=$(free_port)
ENDPOINT="tcp://127.0.0.1:$PORT"
sed -i "s|^listen = .*|listen = \"$ENDPOINT\"|" "$R$FG_SYSCONFDIR/fleetgated.conf"
ln -s "$R$FG_SYSCONFDIR/fleetgated.conf" "$S/fleetgated.conf"
out=$("$R$FG_BINDIR/fleetgate" init --state "$S" 2>&1) || die "installed fleetgate init failed: $out"
expect_match "init keeps the installed config" "$out" "existing, kept as it is"
check "the config is still the link" test -L "$S/fleetgated.conf"
out=$("$R$FG_BINDIR/fleetgate" init --state "$S" --listen "$ENDPOINT" 2>&1) && fail "init ran twice" ||
  expect_match "a second init refuses" "$out" "already holds a gateway"

FLEETGATE="$R$FG_BINDIR/fleetgate" FLEETGATED="$R$FG_SBINDIR/fleetgated" AGENT="$R$FG_BINDIR/fleetgate-agent"
GW=$S
gw_start
bundle a1
agent_conf a1 >/dev/null
agent a1 && ok "the installed agent enrolls with the installed gateway" || fail "enroll: $(cat "$T/a1.out")"
check "the certificate chains to the installed gateway's CA" \
  openssl verify -CAfile "$S/ca/ca.crt" "$(crt a1)"
gw_stop

# The SDK: the example backend, built out of tree against the installed
# header and pkg-config file only, installed where pkg-config says, loaded
# by the installed gateway, issues.
cflags=$(PKG_CONFIG_SYSROOT_DIR="$R" PKG_CONFIG_PATH="$R$FG_PCDIR" pkg-config --cflags fleetgate-plugin)
expect_match "pkg-config --cflags points into the installed tree" "$cflags" "^-I$R"
mkdir -p "$T/sdk"
cp "$FG_SOURCE_ROOT/examples/plugin-backend/example_ca.c" "$T/sdk/"
if (cd "$T/sdk" && cc -Wall -Werror -Wno-unused-parameter -shared -fPIC -o fleetgate-example.so example_ca.c \
      $cflags $(pkg-config --libs libcrypto)) 2>"$T/sdk/cc.log"; then
  ok "the example backend builds against the installed SDK"
else
  fail "the example backend does not build: $(cat "$T/sdk/cc.log")"
fi
install -m 0755 "$T/sdk/fleetgate-example.so" "$R$PLUGINDIR_PC/"
cat >>"$R$FG_SYSCONFDIR/fleetgated.conf" <<'CONF'
backends["example"] = { plugin = "example" }
profiles.default.backend = "example"
CONF
gw_start
expect_match "the gateway loaded the example backend" "$(cat "$T/gw.log")" "example CA ready"
bundle a2
agent_conf a2 >/dev/null
agent a2 && ok "an agent enrolls through the out-of-tree backend" || fail "enroll via example: $(cat "$T/a2.out")"
expect_match "issued by the example CA" "$(openssl x509 -in "$(crt a2)" -noout -issuer)" "fleetgate example CA"
check "the certificate verifies against the example CA" openssl verify -CAfile "$S/example-ca.crt" "$(crt a2)"
gw_stop

# The plugins came from the temp root: without them there, no start.
mv "$R$FG_PLUGINDIR" "$R$FG_PLUGINDIR.away"
out=$(timeout 20 "$FLEETGATED" --state "$S" 2>&1) && fail "fleetgated started without its plugins" ||
  expect_match "fleetgated looked for its plugins in its own tree" "$out" "plugin '[a-z]+' not found.*$R"
mv "$R$FG_PLUGINDIR.away" "$R$FG_PLUGINDIR"

finish
