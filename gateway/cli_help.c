/*
 * cli_help.c: per-command help of the fleetgate CLI (cli_help.h).
 */
#include <string.h>

#include "cli_help.h"

struct help {
	const char *cmd;
	const char *sub;        /* NULL: the command has no subcommands */
	const char *usage;      /* after "fleetgate " */
	const char *what;
	const char *options;    /* one option a line, "  --opt ARG  meaning" */
	const char *example;
};

static const struct help helps[] = {
	{ "init", NULL, "init --state DIR [--listen ENDPOINT] [--http HOST:PORT] [--est HOST:PORT]",
	  "Create a gateway in DIR: config, policy, store, local CA and CURVE keys. A config\n"
	  "already in DIR without keys (the installed one, linked in by tmpfiles.d) is kept.",
	  "  --state DIR        the gateway's state directory (created 0700)\n"
	  "  --listen ENDPOINT  ZeroMQ endpoint (tcp://127.0.0.1:7700)\n"
	  "  --http HOST:PORT   turn on the HTTP side: metrics, CRL, OCSP (docs/http.md)\n"
	  "  --est HOST:PORT    turn on the EST front-end with a local-CA TLS certificate\n",
	  "fleetgate init --state /var/lib/fleetgate --listen tcp://0.0.0.0:7700" },
	{ "token", "create", "token create --state DIR --group G [--uses N] [--ttl DURATION] [--bundle FILE]\n"
	  "                       [--endpoint ENDPOINT] [--bind K=V]... [--device DEVICE]",
	  "Make an enrollment token; with --bundle, write a device's bootstrap bundle.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --group G          the group the enrolled device joins (policies see it)\n"
	  "  --uses N           how many enrollments it allows (1)\n"
	  "  --ttl DURATION     how long it is valid: 30m, 24h, 7d (24h)\n"
	  "  --bundle FILE      write the bootstrap bundle (endpoint, CURVE key, anchors, token)\n"
	  "  --endpoint E       the endpoint written into the bundle (default: listen)\n"
	  "  --bind K=V         only a device whose facts match: serial=S, tpm=yes (repeatable)\n"
	  "  --device DEVICE    for a pre-registered device (takes its group)\n",
	  "fleetgate token create --state /var/lib/fleetgate --group laptops --bundle dev1.bundle" },
	{ "token", "list", "token list --state DIR [--json]", "List enrollment tokens.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --json             one JSON document instead of a table\n",
	  "fleetgate token list --state /var/lib/fleetgate" },
	{ "token", "show", "token show --state DIR TOKEN_ID [--json]", "Show one enrollment token.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --json             JSON instead of text\n",
	  "fleetgate token show --state /var/lib/fleetgate 3f2a9c" },
	{ "token", "revoke", "token revoke --state DIR TOKEN_ID",
	  "Revoke an enrollment token: it enrolls nothing from now on.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate token revoke --state /var/lib/fleetgate 3f2a9c" },
	{ "device", "import", "device import --state DIR FILE.csv [--group G] [--bundles DIR] [--endpoint E]\n"
	  "                        [--ttl 30d]",
	  "Pre-register devices from a CSV file (header: serial,hostname,group,...), each with\n"
	  "a one-use token.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --group G          the group of rows that name none\n"
	  "  --bundles DIR      write DIR/<serial>.bundle for each device\n"
	  "  --endpoint E       the endpoint written into the bundles\n"
	  "  --ttl DURATION     how long the tokens are valid (30d)\n",
	  "fleetgate device import --state /var/lib/fleetgate fleet.csv --bundles ./bundles" },
	{ "device", "list", "device list --state DIR [--json]", "List devices.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --json             one JSON document instead of a table\n",
	  "fleetgate device list --state /var/lib/fleetgate --json" },
	{ "device", "show", "device show --state DIR DEVICE [--json]",
	  "Facts, certificates, last check-in, commands and history of a device.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --json             JSON instead of text\n",
	  "fleetgate device show --state /var/lib/fleetgate d-7f3a" },
	{ "device", "revoke", "device revoke --state DIR DEVICE",
	  "Revoke a device and all its certificates; it can no longer enroll or renew.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate device revoke --state /var/lib/fleetgate d-7f3a" },
	{ "device", "retire", "device retire --state DIR DEVICE",
	  "Take a device out of service: every certificate revoked, everything denied, history kept.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate device retire --state /var/lib/fleetgate d-7f3a" },
	{ "device", "command", "device command --state DIR (DEVICE | --group G) renew|rekey|update-trust|rebootstrap\n"
	  "                         [--slot S]",
	  "Queue a command, delivered at the device's next check-in.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --group G          every device of group G instead of one DEVICE\n"
	  "  --slot S           only the agent's slot S\n"
	  "  --within DURATION  with --group G renew: move the group's renewal windows into the\n"
	  "                     next DURATION (48h, 7d), spread evenly over its hours, instead of\n"
	  "                     renewing every device at its next check-in\n",
	  "fleetgate device command --state /var/lib/fleetgate --group laptops renew --within 48h" },
	{ "renewals", "plan", "renewals plan --state DIR [--days N] [--json]",
	  "The renewal schedule: per day (UTC) the renewals expected (each window spreads its one\n"
	  "renewal over its hours), the busiest hour and the certificates that expire.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --days N           how many days ahead (30)\n"
	  "  --json             one JSON document instead of a table\n",
	  "fleetgate renewals plan --state /var/lib/fleetgate --days 90" },
	{ "ui", "token", "ui token --state DIR",
	  "Make the dashboard's bearer token: printed once on stdout, its SHA-256 written to\n"
	  "the ui.token file (ui/token in the state directory, 0600). A new token replaces the old one at once.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate ui token --state /var/lib/fleetgate" },
	{ "cert", "list", "cert list --state DIR [--device DEVICE] [--json]", "List issued certificates.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --device DEVICE    only this device's\n"
	  "  --json             one JSON document instead of a table\n",
	  "fleetgate cert list --state /var/lib/fleetgate --device d-7f3a" },
	{ "backend", "cacerts", "backend cacerts --state DIR NAME",
	  "The CA certificates of backend NAME, PEM on stdout.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate backend cacerts --state /var/lib/fleetgate local" },
	{ "backend", "crl", "backend crl --state DIR NAME", "The CRL of backend NAME's CA, PEM on stdout.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate backend crl --state /var/lib/fleetgate local" },
	{ "backend", "cert", "backend cert --state DIR NAME SERIAL",
	  "A certificate backend NAME's CA issued (SCEP GetCert), PEM on stdout.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate backend cert --state /var/lib/fleetgate scep 4f1a" },
	{ "backend", "acme-rollover", "backend acme-rollover --state DIR NAME",
	  "Replace ACME backend NAME's account key at the CA (RFC 8555 keyChange); a running\n"
	  "fleetgated takes up the new key at its next request.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate backend acme-rollover --state /var/lib/fleetgate acme" },
	{ "audit", "verify", "audit verify --state DIR", "Check the audit log's hash chain.",
	  "  --state DIR        the gateway's state directory\n",
	  "fleetgate audit verify --state /var/lib/fleetgate" },
	{ "audit", "tail", "audit tail --state DIR [-n N] [--device DEVICE] [--follow] [--json]",
	  "The last N audit records; --follow prints new ones as they come.",
	  "  --state DIR        the gateway's state directory\n"
	  "  -n, --lines N      how many records (20)\n"
	  "  --device DEVICE    only this device's\n"
	  "  -f, --follow       keep printing new records\n"
	  "  --json             JSON lines\n",
	  "fleetgate audit tail --state /var/lib/fleetgate -n 50 --follow" },
	{ "status", NULL, "status --state DIR [--json]",
	  "Devices, expiring certificates, recent failures, backends' health, queue.",
	  "  --state DIR        the gateway's state directory\n"
	  "  --json             JSON instead of text\n",
	  "fleetgate status --state /var/lib/fleetgate" },
	{ "policy", "check", "policy check [--state DIR] [FILE]",
	  "Compile a policy as fleetgated would (limits from DIR's config, or the defaults) and\n"
	  "run FILE.tests.json next to it if there is one; exit 0 or 1.",
	  "  --state DIR        take the limits and the policy path from this gateway\n",
	  "fleetgate policy check /usr/share/fleetgate/policies/default.lua" },
	{ "policy", "test", "policy test [--state DIR] FILE [CASES.json...]",
	  "Run the policy on each fixture and compare the decisions (default: the fixtures next\n"
	  "to FILE); prints a diff per mismatch; exit 0 or 1.",
	  "  --state DIR        take the limits from this gateway's config\n",
	  "fleetgate policy test policy.lua policy.tests.json" },
	{ "version", NULL, "version", "Print the version.", "", "fleetgate version" },
};

#define NHELPS (sizeof helps / sizeof helps[0])

static void print_one(FILE *f, const struct help *h)
{
	fprintf(f, "usage: fleetgate %s\n\n%s\n", h->usage, h->what);
	if (h->options[0] != '\0')
		fprintf(f, "\noptions:\n%s", h->options);
	fprintf(f, "\nexample:\n  %s\n", h->example);
}

/* See cli_help.h. */
int cli_help_print(FILE *f, const char *cmd, const char *sub)
{
	int found = 0;

	for (size_t i = 0; i < NHELPS; i++)
		if (strcmp(helps[i].cmd, cmd) == 0 && sub != NULL && helps[i].sub != NULL &&
		    strcmp(helps[i].sub, sub) == 0) {
			print_one(f, &helps[i]);
			return 0;
		}
	for (size_t i = 0; i < NHELPS; i++) {
		if (strcmp(helps[i].cmd, cmd) != 0)
			continue;
		if (found++)
			fputc('\n', f);
		print_one(f, &helps[i]);
	}
	return found ? 0 : -1;
}

/* See cli_help.h. */
void cli_help_list(FILE *f)
{
	for (size_t i = 0; i < NHELPS; i++)
		fprintf(f, "%s%s%s\n", helps[i].cmd, helps[i].sub ? " " : "", helps[i].sub ? helps[i].sub : "");
}

/* See cli_help.h. */
int cli_help_is_command(const char *cmd)
{
	for (size_t i = 0; i < NHELPS; i++)
		if (strcmp(helps[i].cmd, cmd) == 0)
			return 1;
	return 0;
}

/* Levenshtein distance of a and b, each at most 63 characters (longer
 * ones count as far apart). */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

	if (la > 63 || lb > 63)
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			cur[j] = del < ins ? del : ins;
			if (sub < cur[j])
				cur[j] = sub;
		}
		memcpy(prev, cur, (lb + 1) * sizeof cur[0]);
	}
	return prev[lb];
}

/* See cli_help.h. */
const char *cli_help_closest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t bestd = (size_t)-1, limit = strlen(word) / 3;

	if (limit < 2)
		limit = 2;
	for (size_t i = 0; i < n; i++) {
		size_t d = distance(word, cands[i]);
		if (d < bestd) {
			bestd = d;
			best = cands[i];
		}
	}
	return bestd <= limit ? best : NULL;
}
