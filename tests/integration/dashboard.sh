#!/usr/bin/env bash
# The dashboard and its JSON API on a gateway with a populated store (5
# enrolled agents in two groups, one renewal, a denied enrollment, 120
# imported devices): the config refuses plain HTTP off loopback; the API
# refuses requests without or with a wrong bearer token, counts right,
# pages through every device exactly once and filters; `renewals plan`
# sees the windows and `device command --group G renew --within 48h` moves
# them; then headless Chromium (Debian's chromium) renders the overview,
# the device list and a device page, and the test asserts what it drew
# (counts, the 90 bars and points of the expiry plot, the 24 hours of
# activity, the rows) and keeps a screenshot of each
# ($FLEETGATE_SCREENSHOTS, when set, receives them: docs/dashboard.md).
. "$(dirname "$0")/lib.sh"

command -v chromium >/dev/null || die "chromium is not installed (tools/dev deps installs it)"
command -v jq >/dev/null || die "jq is not installed (tools/dev deps installs it)"

HPORT=$(free_port)
gw_init --http "127.0.0.1:$HPORT"
URL="http://127.0.0.1:$HPORT"
# a policy that denies one group, for a failure in the activity plot
cat > "$GW/policy.lua" <<'LUA'
function enroll(req)
  if req.device.group == "denied" then return deny("this group may not enroll") end
  local cn = "dev-" .. string.sub(req.device.id, 5) .. ".fleet.test"
  return allow{ cn = cn, dns = { cn }, validity = fleet.days(30) }
end
function renew(req)
  return allow{ validity = fleet.days(30) }
end
LUA

# Plain HTTP off loopback is refused, with the way out.
cp "$GW/fleetgated.conf" "$T/conf.saved"
sed -i "s/^http = { listen = \"127.0.0.1:$HPORT\" }/http = { listen = \"0.0.0.0:$HPORT\" }/" "$GW/fleetgated.conf"
echo 'ui = { enabled = true }' >> "$GW/fleetgated.conf"
rc=0; out=$("$FLEETGATE" renewals plan --state "$GW" 2>&1) || rc=$?
expect_eq "ui on a public plain-HTTP address is a config error" "$rc" "1"
expect_match "which says to use HTTPS or loopback" "$out" "only on a loopback address.*set est.listen"
cp "$T/conf.saved" "$GW/fleetgated.conf"
echo 'ui = { enabled = true }' >> "$GW/fleetgated.conf"
gw_start

H() { curl -s --max-time 10 "$@"; }
expect_eq "/ui redirects to /ui/" "$(H -o /dev/null -w '%{http_code} %{redirect_url}' "$URL/ui")" "301 $URL/ui/"
expect_eq "the page is served without a token" "$(H -o /dev/null -w '%{http_code}' "$URL/ui/")" "200"
expect_match "with a content security policy" "$(H -D - -o /dev/null "$URL/ui/app.js")" "Content-Security-Policy: default-src 'none'; script-src 'self'"
expect_eq "an unknown file is 404" "$(H -o /dev/null -w '%{http_code}' "$URL/ui/nope.js")" "404"
expect_eq "before a token exists the API is 401" "$(H -o /dev/null -w '%{http_code}' "$URL/api/v1/summary")" "401"
expect_match "and says how to make one" "$(H "$URL/api/v1/summary")" "fleetgate ui token"

TOK=$("$FLEETGATE" ui token --state "$GW" 2>"$T/token.err")
expect_match "ui token prints a token" "$TOK" "^fgu_[0-9a-f]{64}$"
expect_eq "its hash is stored 0600, not the token" "$(stat -c %a "$GW/ui/token") $(cat "$GW/ui/token")" \
  "600 $(printf %s "$TOK" | sha256sum | cut -d' ' -f1)"
check "the token itself is nowhere in the state directory" bash -c "! grep -rqF '$TOK' '$GW'"
A() { H -H "Authorization: Bearer $TOK" "$@"; }
expect_eq "no credentials: 401" "$(H -o /dev/null -w '%{http_code}' "$URL/api/v1/devices")" "401"
expect_match "with a Bearer challenge" "$(H -D - -o /dev/null "$URL/api/v1/devices")" 'WWW-Authenticate: Bearer realm="fleetgate"'
expect_eq "a wrong token: 401" "$(H -H "Authorization: Bearer ${TOK%?}0" -o /dev/null -w '%{http_code}' "$URL/api/v1/devices")" "401"
expect_eq "a Basic credential: 401" "$(H -u "x:$TOK" -o /dev/null -w '%{http_code}' "$URL/api/v1/devices")" "401"
expect_eq "the token: 200" "$(A -o /dev/null -w '%{http_code}' "$URL/api/v1/devices")" "200"
expect_eq "the API is read-only" "$(A -o /dev/null -w '%{http_code}' -d x "$URL/api/v1/devices")" "405"
expect_eq "an unknown resource is 404" "$(A -o /dev/null -w '%{http_code}' "$URL/api/v1/nope")" "404"
expect_eq "a bad limit is 400" "$(A -o /dev/null -w '%{http_code}' "$URL/api/v1/devices?limit=0")" "400"
expect_match "which says what is allowed" "$(A "$URL/api/v1/devices?limit=x")" "limit must be a whole number from 1 to 500"

# The fleet: 3 laptops, 2 servers (one renews), one denied, 120 imported.
for i in 1 2 3; do GROUP=laptops bundle "l$i"; agent_conf "l$i" >/dev/null; check "laptop $i enrolls" agent "l$i"; done
for i in 1 2; do GROUP=servers bundle "s$i"; agent_conf "s$i" >/dev/null; check "server $i enrolls" agent "s$i"; done
check "server 1 renews" agent s1 --renew-now
GROUP=denied bundle x1; agent_conf x1 >/dev/null
rc=0; agent x1 || rc=$?
check "the denied device is refused" test "$rc" -ne 0
{ echo "serial,hostname,group"; for i in $(seq -w 1 120); do echo "LAB$i,lab$i.fleet.test,lab"; done; } > "$T/lab.csv"
check "120 devices imported" "$FLEETGATE" device import --state "$GW" "$T/lab.csv"

S=$(A "$URL/api/v1/summary")
expect_eq "summary: 5 active, 120 registered" "$(jq -c '[.devices.active, .devices.registered]' <<<"$S")" "[5,120]"
expect_eq "summary: groups" "$(jq -c '[.groups[] | [.group, .devices, .active]]' <<<"$S")" \
  '[["lab",120,0],["laptops",3,3],["servers",2,2]]'
expect_eq "summary: 6 valid certificates, all expiring within 30 days" \
  "$(jq -c '[.certificates.valid, .certificates.expiring_30d]' <<<"$S")" "[6,6]"
expect_eq "summary: the denial is a failure of the last hour" "$(jq '.failures_last_hour["enroll.deny"]' <<<"$S")" "1"
expect_eq "summary: the local backend is healthy" "$(jq -c '[.backends[] | [.name, .ok]]' <<<"$S")" '[["local",true]]'
expect_eq "summary agrees with fleetgate status --json" \
  "$(jq -c '[.devices, .groups, .certificates, .failures_last_hour]' <<<"$S")" \
  "$("$FLEETGATE" status --state "$GW" --json | jq -c '[.devices, .groups, .certificates, .failures_last_hour]')"

# Paging: 126 devices (the denied one was never created) in pages of 50.
: > "$T/ids"
after=""; pages=0
while :; do
  P=$(A "$URL/api/v1/devices?limit=50&after=$after")
  pages=$((pages + 1))
  jq -r '.devices[].id' <<<"$P" >> "$T/ids"
  [ "$pages" = 1 ] && expect_eq "page 1 has 50 devices of 125" "$(jq -c '[(.devices | length), .total]' <<<"$P")" "[50,125]"
  after=$(jq -r '.next_after // empty' <<<"$P")
  [ -z "$after" ] || [ "$pages" -ge 10 ] && break
done
expect_eq "three pages" "$pages" "3"
expect_eq "every device exactly once" "$(sort -u "$T/ids" | wc -l) $(wc -l < "$T/ids")" "125 125"
expect_eq "in id order" "$(sort "$T/ids" | md5sum)" "$(md5sum < "$T/ids")"
expect_eq "the ids are the CLI's" "$(sort "$T/ids" | md5sum)" \
  "$("$FLEETGATE" device list --state "$GW" --json | jq -r '.[].id' | sort | md5sum)"
expect_eq "filter by group and state" \
  "$(A "$URL/api/v1/devices?group=laptops&state=active&limit=2" | jq -c '[(.devices | length), .total, (.devices | map(.group) | unique)]')" \
  '[2,3,["laptops"]]'
expect_eq "a bad state is 400" "$(A -o /dev/null -w '%{http_code}' "$URL/api/v1/devices?state=bogus")" "400"

# s1: the server that renewed (two certificates)
S1=$("$FLEETGATE" cert list --state "$GW" --json | jq -r 'group_by(.device)[] | select(length == 2) | .[0].device')
D=$(A "$URL/api/v1/devices/$S1")
expect_eq "device page: the same document as device show --json" "$(jq -S -c 'del(.facts)' <<<"$D")" \
  "$("$FLEETGATE" device show --state "$GW" "$S1" --json | jq -S -c 'del(.facts)')"
expect_eq "an unknown device is 404" "$(A -o /dev/null -w '%{http_code}' "$URL/api/v1/devices/dev_0000000000000000")" "404"

# Expiries, renewals and activity.
E=$(A "$URL/api/v1/expiries?days=90")
expect_eq "expiries: 90 days" "$(jq '.days | length' <<<"$E")" "90"
# the current certificates: s1's first one, superseded by its renewal,
# is left out (it needs no renewal and no attention)
expect_eq "expiries: every current certificate expires in them" "$(jq '[.days[].expiring] | add' <<<"$E")" "5"
expect_eq "renewals: one per current certificate" "$(jq '[.days[].renewals] | add | round' <<<"$E")" "5"
first_renewal=$(jq -r '[.days[] | select(.renewals > 0) | .day][0]' <<<"$E")
expect_eq "renewals in the window (days 20 to 25 of 30)" \
  "$(( ($(date -ud "$first_renewal" +%s) - $(date -ud "$(date -u +%F)" +%s)) / 86400 >= 19 ))" "1"
AC=$(A "$URL/api/v1/activity?hours=24")
expect_eq "activity: 24 hours" "$(jq '.hours | length' <<<"$AC")" "24"
expect_eq "activity: 5 enrolled, 1 renewed, 1 failed" \
  "$(jq -c '[([.hours[].enrolled] | add), ([.hours[].renewed] | add), ([.hours[].failed] | add)]' <<<"$AC")" "[5,1,1]"
AU=$(A "$URL/api/v1/audit?limit=5")
expect_eq "audit: the last 5 records, newest first" "$(jq -c '[(.records | length), (.records[0].seq > .records[4].seq)]' <<<"$AU")" "[5,true]"

# The renewal plan, and a pull-in.
PLAN=$("$FLEETGATE" renewals plan --state "$GW" --days 40 --json)
expect_eq "renewals plan: 5 renewals, 5 expiries" "$(jq -c '[(.renewals | round), .expiring]' <<<"$PLAN")" "[5,5]"
expect_eq "none in the next 2 days" "$("$FLEETGATE" renewals plan --state "$GW" --days 2 --json | jq '.renewals | round')" "0"
expect_match "the text plan has a line per day" "$("$FLEETGATE" renewals plan --state "$GW" --days 3)" "^[0-9]{4}-[0-9]{2}-[0-9]{2} +0\.0"
out=$("$FLEETGATE" device command --state "$GW" --group laptops renew --within 48h)
expect_match "pull-in moves the 3 laptops" "$out" "^3 certificates of group laptops will renew within 48h"
expect_eq "now 3 renewals in the next 2 days" "$("$FLEETGATE" renewals plan --state "$GW" --days 3 --json | jq '.renewals | round')" "3"
L1=$(A "$URL/api/v1/devices?group=laptops&limit=1" | jq -r '.devices[0].id')
win_end=$(A "$URL/api/v1/devices/$L1" | jq -r '[.certificates[] | select(.status == "valid")][0].renew_window.end')
expect_eq "its window ends within 48h" "$(( $(date -ud "$win_end" +%s) <= $(date +%s) + 48 * 3600 ))" "1"
rc=0; out=$("$FLEETGATE" device command --state "$GW" l1 renew --within 48h 2>&1) || rc=$?
expect_eq "--within needs --group" "$rc" "2"
rc=0; out=$("$FLEETGATE" device command --state "$GW" --group laptops renew --within 10m 2>&1) || rc=$?
expect_match "--within must be at least an hour" "$out" "from 1h to 366d"

# The page in a real browser.
SHOTS=${FLEETGATE_SCREENSHOTS:-$T}
browse() { # browse ROUTE OUT CHROMIUM-ARGS...: the page at #ROUTE, the token in the fragment
  local route=$1 out=$2
  timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$T/chromium" --virtual-time-budget=8000 --window-size=1280,1800 \
    "${@:3}" "$URL/ui/#token=$TOK${route:+&$route}" >"$out" 2>>"$T/chromium.log"
}
check "chromium renders the overview" browse "" "$T/overview.html" --dump-dom
O=$(cat "$T/overview.html")
expect_match "the overview is ready" "$O" '<body[^>]*data-ready="overview"'
count() { grep -o "$1" <<<"$2" | wc -l; }
expect_match "active devices: 5" "$O" 'id="count-active"[^>]*>5<'
expect_match "registered devices: 120" "$O" 'id="count-registered"[^>]*>120<'
expect_match "valid certificates: 6" "$O" 'id="cert-valid"[^>]*>6<'
expect_eq "three group rows" "$(count 'class="group-row"' "$O")" "3"
expect_match "the backend is shown healthy" "$O" 'class="backend ok"[^>]*data-name="local"'
expect_match "the expiry plot covers 90 days" "$O" '<svg[^>]*id="expiry-plot"[^>]*data-days="90"'
expect_eq "with 90 bars" "$(grep -o '<svg[^>]*id="expiry-plot".*</svg>' <<<"$O" | grep -o '<rect class="bar"' | wc -l)" "90"
expect_eq "and 90 renewal points" "$(count 'class="renewal-point"' "$O")" "90"
expect_match "and the renewal line" "$O" 'class="renewals-line"'
expect_match "the plot's total is the API's" "$O" 'data-expiring-total="5"'
expect_eq "the activity plot has 24 hours of enrollments" "$(count 'class="bar enrolled"' "$O")" "24"
expect_eq "and of failures" "$(count 'class="bar failed"' "$O")" "24"
expect_eq "20 audit rows" "$(count 'class="audit-row"' "$O")" "20"
check "chromium screenshots the overview" browse "" /dev/null --screenshot="$SHOTS/dashboard-overview.png"
check "the screenshot is a PNG" bash -c "file '$SHOTS/dashboard-overview.png' | grep -q 'PNG image data, 1280 x 1800'"

check "chromium renders the device list" browse devices "$T/devices.html" --dump-dom
DV=$(cat "$T/devices.html")
expect_match "the device list is ready" "$DV" 'data-ready="devices"'
expect_eq "50 device rows" "$(count 'class="device-row"' "$DV")" "50"
expect_match "the total" "$DV" 'id="devices-total"[^>]*>125 devices<'
expect_match "and a next page" "$DV" 'id="next-page"'

check "chromium renders a device page" browse "device/$S1" "$T/device.html" --dump-dom
DP=$(cat "$T/device.html")
expect_match "the device page is ready" "$DP" "<body[^>]*data-ready=\"device\""
expect_match "for that device" "$DP" "id=\"device-page\"[^>]*data-id=\"$S1\""
expect_eq "with its 2 certificates" "$(count 'class="cert-row"' "$DP")" "2"
expect_match "its facts" "$DP" '<dl id="facts"'
expect_match "and its history" "$DP" 'class="history-row"'
check "chromium screenshots the device page" browse "device/$S1" /dev/null --screenshot="$SHOTS/dashboard-device.png"

check "without a token the page asks for one" bash -c "timeout 90 chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir='$T/chromium2' --virtual-time-budget=5000 --dump-dom '$URL/ui/' 2>/dev/null | grep -q 'data-ready=\"auth\"'"
check "the gateway is still up" gw_alive

# With an EST listener the dashboard is on it, over HTTPS with the EST
# certificate, and no longer on the plain HTTP side.
gw_stop
EPORT=$(free_port)
sed -i '/^ui = /d' "$GW/fleetgated.conf"
G2="$T/gw2"
"$FLEETGATE" init --state "$G2" --listen "tcp://127.0.0.1:$(free_port)" --http "127.0.0.1:$(free_port)" \
  --est "127.0.0.1:$EPORT" >/dev/null || die "init --est failed"
echo 'ui = { enabled = true }' >> "$G2/fleetgated.conf"
TOK2=$("$FLEETGATE" ui token --state "$G2" 2>/dev/null)
"$FLEETGATED" --state "$G2" 2>"$T/gw2.log" &
GW_PID=$!     # lib.sh's cleanup stops it, also when a check dies
for _ in $(seq 200); do grep -q "listening on" "$T/gw2.log" && break; sleep 0.05; done
check "the EST gateway says where the dashboard is" grep -q "EST on https://127.0.0.1:$EPORT.*the dashboard at /ui/" "$T/gw2.log"
HS() { curl -s --max-time 10 --cacert "$G2/ca/ca.crt" "$@"; }
EURL="https://127.0.0.1:$EPORT"
expect_eq "the page over HTTPS" "$(HS -o /dev/null -w '%{http_code}' "$EURL/ui/")" "200"
expect_eq "the API over HTTPS without a token: 401" "$(HS -o /dev/null -w '%{http_code}' "$EURL/api/v1/summary")" "401"
expect_eq "the first gateway's token is not this one's" \
  "$(HS -H "Authorization: Bearer $TOK" -o /dev/null -w '%{http_code}' "$EURL/api/v1/summary")" "401"
expect_eq "its own token: 200, an empty fleet" \
  "$(HS -H "Authorization: Bearer $TOK2" "$EURL/api/v1/devices" | jq -c '[.total, .next_after]')" "[0,null]"
H2=$(sed -n 's/^http = { listen = "\(.*\)" }/\1/p' "$G2/fleetgated.conf")
expect_eq "and not on its plain HTTP side" "$(H -o /dev/null -w '%{http_code}' "http://$H2/api/v1/summary")" "404"
expect_eq "while that still serves /healthz" "$(H "http://$H2/healthz")" "ok"
gw_stop
finish
