/*
 * fleetgate: the operator's command-line tool.
 *
 *   fleetgate init --state DIR [--listen ENDPOINT] [--http HOST:PORT] [--est HOST:PORT]
 *   fleetgate token create --state DIR --group G [--uses N] [--ttl DURATION]
 *                          [--bundle FILE] [--endpoint ENDPOINT] [--bind K=V] [--device DEV]
 *   fleetgate token list|show|revoke --state DIR [TOKEN_ID] [--json]
 *   fleetgate device import --state DIR FILE.csv [--group G] [--bundles DIR] [--ttl 30d]
 *   fleetgate device list --state DIR [--json]
 *   fleetgate device revoke --state DIR DEVICE
 *   fleetgate cert list --state DIR [--device DEVICE] [--json]
 *   fleetgate audit verify --state DIR
 *   fleetgate status --state DIR [--json]
 *   fleetgate policy check [--state DIR] [FILE]
 *   fleetgate policy test [--state DIR] FILE [CASES.json...]
 *
 * It works on the same store as a running fleetgated (each command is a
 * short transaction on its own connection).
 */
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "admin.h"
#include "backend.h"
#include "config.h"
#include "crl.h"
#include "est_cert.h"
#include "fg_bundle.h"
#include "fg_curve.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_x509.h"
#include "policy.h"
#include "policy_fixtures.h"
#include "binding.h"
#include "cli_help.h"
#include "fleet_json.h"
#include "import.h"
#include "store.h"

extern const char fg_default_policy[];
extern const size_t fg_default_policy_len;

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct opts {
	const char *state;
	const char *listen;
	const char *group;
	const char *bundle;
	const char *endpoint;
	const char *device;
	const char *ttl;
	int uses;
	int json;
	int follow;         /* audit tail --follow */
	long lines;         /* audit tail -n */
	const char *slot;   /* device command --slot */
	const char *http;   /* init --http HOST:PORT */
	const char *est;    /* init --est HOST:PORT */
	const char *bundles;        /* device import --bundles DIR */
	const char *binds[16];      /* token create --bind K=V */
	int nbinds;
	int ttl_set;                /* --ttl given (import's default differs) */
	long days;                  /* renewals plan --days */
	const char *within;         /* device command --group G renew --within DURATION */
	int argc;       /* positional arguments left */
	char **argv;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fleetgate COMMAND [options]\n"
		"\n"
		"  init --state DIR [--listen tcp://127.0.0.1:7700] [--http 127.0.0.1:7780]\n"
		"        create a gateway: config, policy, store, local CA, CURVE keys; with --http\n"
		"        the HTTP side (metrics, CRL, OCSP) on that address (docs/http.md)\n"
		"        [--est 127.0.0.1:8443]: the EST front-end on that address, with a TLS\n"
		"        certificate from the local CA (docs/est.md)\n"
		"  token create --state DIR --group G [--uses 1] [--ttl 24h] [--bundle FILE]\n"
		"        [--endpoint ENDPOINT]\n"
		"        [--bind serial=S] [--bind tpm=yes] [--device DEVICE]\n"
		"        make an enrollment token; with --bundle write a bootstrap bundle for a device;\n"
		"        --bind: only a device whose facts match may use it; --device: for a\n"
		"        pre-registered device (its group)\n"
		"  token list --state DIR [--json]\n"
		"  token show --state DIR TOKEN_ID [--json]\n"
		"  token revoke --state DIR TOKEN_ID\n"
		"        list, inspect or revoke enrollment tokens (a revoked token enrolls nothing)\n"
		"  device import --state DIR FILE.csv [--group G] [--bundles DIR] [--endpoint E]\n"
		"        [--ttl 30d]\n"
		"        pre-register devices from a CSV file (header: serial,hostname,group,...),\n"
		"        each with a one-use token; --bundles writes DIR/<serial>.bundle for each\n"
		"  device list --state DIR [--json]\n"
		"  device revoke --state DIR DEVICE\n"
		"        revoke a device and all its certificates; it can no longer enroll or renew\n"
		"  device show --state DIR DEVICE [--json]\n"
		"        facts, certificates, last check-in, commands and history of a device\n"
		"  device retire --state DIR DEVICE\n"
		"        take a device out of service: every certificate revoked, everything denied,\n"
		"        history kept\n"
		"  device command --state DIR (DEVICE | --group G) renew|rekey|update-trust|rebootstrap\n"
		"        [--slot S]\n"
		"        queue a command, delivered at the device's next check-in\n"
		"  device command --state DIR --group G renew --within DURATION [--slot S]\n"
		"        move the group's renewal windows into the next DURATION, spread evenly\n"
		"  renewals plan --state DIR [--days 30] [--json]\n"
		"        the renewals scheduled per day (and their peak hour) and the expiries\n"
		"  ui token --state DIR\n"
		"        make the dashboard's bearer token (printed once; its hash in ui/token)\n"
		"  cert list --state DIR [--device DEVICE] [--json]\n"
		"  backend cacerts|crl --state DIR NAME\n"
		"  backend cert --state DIR NAME SERIAL\n"
		"        ask backend NAME's CA for its certificates, its CRL, or a certificate it\n"
		"        issued (SCEP GetCert/GetCRL); PEM on stdout\n"
		"  backend acme-rollover --state DIR NAME\n"
		"        replace ACME backend NAME's account key at the CA (RFC 8555 keyChange); a running\n"
		"        fleetgated takes up the new key at its next request\n"
		"  audit verify --state DIR\n"
		"        check the audit log's hash chain\n"
		"  audit tail --state DIR [-n N] [--device DEVICE] [--follow] [--json]\n"
		"        the last N audit records (20); --follow prints new ones as they come\n"
		"  status --state DIR [--json]\n"
		"        devices, expiring certificates, recent failures, backends' health, queue\n"
		"  policy check [--state DIR] [FILE]\n"
		"        compile a policy as fleetgated would (limits from DIR's config, or the\n"
		"        defaults) and run FILE.tests.json next to it if there is one; exit 0 or 1\n"
		"  policy test [--state DIR] FILE [CASES.json...]\n"
		"        run the policy on each fixture and compare the decisions (default:\n"
		"        the fixtures next to FILE); prints a diff per mismatch; exit 0 or 1\n"
		"  commands\n"
		"        every command and subcommand, one a line\n"
		"  version\n"
		"\n"
		"fleetgate COMMAND [SUBCOMMAND] --help prints that command's usage, options and an example.\n");
}

/* Say that arg is not an option, naming the closest one of lo. */
static void unknown_option(const char *arg, const struct option *lo, const char *cmd)
{
	const char *names[64], *best;
	char word[64];
	size_t n = 0;

	for (; lo[n].name != NULL && n < sizeof names / sizeof names[0]; n++)
		names[n] = lo[n].name;
	fg_strlcpy(word, arg + strspn(arg, "-"), sizeof word);
	word[strcspn(word, "=")] = '\0';
	best = cli_help_closest(word, names, n);
	if (best != NULL)
		fprintf(stderr, "fleetgate: unknown option '%s'; did you mean --%s? (see `fleetgate %s --help`)\n",
			arg, best, cmd);
	else
		fprintf(stderr, "fleetgate: unknown option '%s'; see `fleetgate %s --help`\n", arg, cmd);
}

/* Parse the options of a subcommand (argv[0] is the subcommand word). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "state", required_argument, NULL, 's' },
		{ "listen", required_argument, NULL, 'l' },
		{ "group", required_argument, NULL, 'g' },
		{ "uses", required_argument, NULL, 'u' },
		{ "ttl", required_argument, NULL, 't' },
		{ "bundle", required_argument, NULL, 'b' },
		{ "endpoint", required_argument, NULL, 'e' },
		{ "device", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "follow", no_argument, NULL, 'f' },
		{ "lines", required_argument, NULL, 'n' },
		{ "slot", required_argument, NULL, 'S' },
		{ "http", required_argument, NULL, 'H' },
		{ "est", required_argument, NULL, 1003 },
		{ "bundles", required_argument, NULL, 1001 },
		{ "bind", required_argument, NULL, 1002 },
		{ "days", required_argument, NULL, 1004 },
		{ "within", required_argument, NULL, 1005 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	char *end;

	memset(o, 0, sizeof *o);
	o->uses = 1;
	o->ttl = "24h";
	optind = 1;
	opterr = 0;
	o->lines = 20;
	o->days = 30;
	while ((c = getopt_long(argc, argv, ":s:jhfn:", lo, NULL)) != -1) {
		switch (c) {
		case ':':
			fprintf(stderr, "fleetgate: option %s needs a value; see `fleetgate %s --help`\n",
				argv[optind - 1], argv[0]);
			return -1;
		case '?':
			unknown_option(argv[optind - 1], lo, argv[0]);
			return -1;
		case 's': o->state = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'g': o->group = optarg; break;
		case 't': o->ttl = optarg; o->ttl_set = 1; break;
		case 1001: o->bundles = optarg; break;
		case 1002:
			if (o->nbinds == (int)(sizeof o->binds / sizeof o->binds[0])) {
				fprintf(stderr, "fleetgate: at most %zu --bind options\n", sizeof o->binds / sizeof o->binds[0]);
				return -1;
			}
			o->binds[o->nbinds++] = optarg;
			break;
		case 'b': o->bundle = optarg; break;
		case 'e': o->endpoint = optarg; break;
		case 'd': o->device = optarg; break;
		case 'j': o->json = 1; break;
		case 'f': o->follow = 1; break;
		case 'S': o->slot = optarg; break;
		case 'H': o->http = optarg; break;
		case 1003: o->est = optarg; break;
		case 1004:
			errno = 0;
			o->days = strtol(optarg, &end, 10);
			if (errno || *end || o->days < 1 || o->days > 3660) {
				fprintf(stderr, "fleetgate: --days must be a whole number from 1 to 3660, not '%s'\n",
					optarg);
				return -1;
			}
			break;
		case 1005: o->within = optarg; break;
		case 'n':
			errno = 0;
			o->lines = strtol(optarg, &end, 10);
			if (errno || *end || o->lines < 0) {
				fprintf(stderr, "fleetgate: -n/--lines must be a whole number, not '%s'\n", optarg);
				return -1;
			}
			break;
		case 'u':
			errno = 0;
			long v = strtol(optarg, &end, 10);
			if (errno || *end || v < 1 || v > 1000000) {
				fprintf(stderr, "fleetgate: --uses must be a whole number from 1 to 1000000, not '%s'\n",
					optarg);
				return -1;
			}
			o->uses = (int)v;
			break;
		case 'h': usage(stdout); exit(EXIT_OK);
		default: return -1;
		}
	}
	o->argc = argc - optind;
	o->argv = argv + optind;
	return 0;
}

static int need_state(const struct opts *o)
{
	if (o->state == NULL) {
		fprintf(stderr, "fleetgate: --state DIR is required (the directory made by `fleetgate init`)\n");
		return -1;
	}
	return 0;
}

/* ---- init ---- */

/* The config text init writes: the default text plus the http block
 * (enabled on http_listen, or commented out). malloc'd, NULL when out of
 * memory. */
static char *init_config_text(const char *listen, const char *http_listen, const char *est_listen)
{
	char *base = config_default_text(listen), *http = config_http_text(http_listen), *out = NULL;
	char *est = config_est_text(est_listen);

	if (base != NULL && http != NULL && est != NULL &&
	    asprintf(&out, "%s%s%s", base, http, est) < 0)
		out = NULL;
	free(base);
	free(http);
	free(est);
	return out;
}

/* init --est: the EST front-end's TLS certificate from the local CA, in
 * <state>/est/. 0, or -1 with err. */
static int init_est_cert(const struct gw_config *cfg, char *err, size_t errlen)
{
	const struct config_backend *b = config_backend(cfg, "local");
	char host[256], dir[PATH_MAX], cadir[PATH_MAX], cakey[PATH_MAX], cacrt[PATH_MAX];
	int port;

	if (b == NULL) {
		fg_seterr(err, errlen, "--est needs the local CA backend to sign the EST server certificate");
		return -1;
	}
	const char *cd = fg_kv_get(b->settings, b->nsettings, "ca_dir");
	if (config_http_split(cfg->est_listen, host, sizeof host, &port) != 0)
		return -1;
	fg_path_join(cfg->state_dir, cd ? cd : "ca", cadir, sizeof cadir);
	fg_path_join(cadir, "ca.key", cakey, sizeof cakey);
	fg_path_join(cadir, "ca.crt", cacrt, sizeof cacrt);
	fg_path_join(cfg->state_dir, "est", dir, sizeof dir);
	if (fg_mkdirs(dir, 0700, err, errlen) != 0)
		return -1;
	return est_cert_make(host, cakey, cacrt, cfg->est_cert, cfg->est_key, err, errlen);
}

static int cmd_init(const struct opts *o)
{
	char err[1024] = "", path[PATH_MAX], conf[PATH_MAX], pub[41], sec[41];
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	struct backends *bs = NULL;
	char *text = NULL;
	int rc = EXIT_FAIL, wrote_conf = 0, adopt = 0;
	struct stat sb;

	if (need_state(o))
		return EXIT_USAGE;
	const char *listen = o->listen ? o->listen : "tcp://127.0.0.1:7700";
	if (strncmp(listen, "tcp://", 6) != 0 && strncmp(listen, "ipc://", 6) != 0) {
		fprintf(stderr, "fleetgate: --listen '%s' is not a ZeroMQ tcp:// or ipc:// endpoint\n", listen);
		return EXIT_USAGE;
	}
	char hhost[256];
	int hport;
	if (o->http != NULL && config_http_split(o->http, hhost, sizeof hhost, &hport) != 0) {
		fprintf(stderr, "fleetgate: --http '%s' is not HOST:PORT; use e.g. 127.0.0.1:7780\n", o->http);
		return EXIT_USAGE;
	}
	if (o->est != NULL && config_http_split(o->est, hhost, sizeof hhost, &hport) != 0) {
		fprintf(stderr, "fleetgate: --est '%s' is not HOST:PORT; use e.g. 127.0.0.1:8443\n", o->est);
		return EXIT_USAGE;
	}
	fg_path_join(o->state, "fleetgated.conf", conf, sizeof conf);
	fg_path_join(o->state, "keys/gateway.key", path, sizeof path);
	/* A config but no keys yet: an installed one (the package's
	 * fleetgated.conf, linked into the state directory by tmpfiles.d), which
	 * init adopts as it is and builds the rest from. */
	if (stat(conf, &sb) == 0 && stat(path, &sb) != 0) {
		if (o->listen != NULL || o->http != NULL || o->est != NULL) {
			fprintf(stderr, "fleetgate: %s exists already; set listen, http and est there "
				"instead of --listen, --http and --est\n", conf);
			return EXIT_USAGE;
		}
		adopt = 1;
	} else if (stat(conf, &sb) == 0) {
		fprintf(stderr, "fleetgate: %s already holds a gateway (%s exists); "
			"choose another directory or remove it first\n", o->state, conf);
		return EXIT_FAIL;
	}
	if (fg_mkdirs(o->state, 0700, err, sizeof err) != 0)
		goto fail;
	fg_path_join(o->state, "keys", path, sizeof path);
	if (fg_mkdirs(path, 0700, err, sizeof err) != 0)
		goto fail;
	fg_path_join(o->state, "keys/gateway.key", path, sizeof path);
	if (fg_curve_load(path, 1, pub, sec, err, sizeof err) != 0)
		goto fail;
	OPENSSL_cleanse(sec, sizeof sec);
	fg_path_join(o->state, "keys/gateway.pub", path, sizeof path);
	if (fg_curve_write_public(path, pub, err, sizeof err) != 0)
		goto fail;
	fg_path_join(o->state, "policy.lua", path, sizeof path);
	if (stat(path, &sb) != 0 &&
	    fg_write_file_atomic(path, fg_default_policy, fg_default_policy_len, 0644,
				 (uid_t)-1, (gid_t)-1, err, sizeof err) != 0)
		goto fail;
	if (!adopt) {
		text = init_config_text(listen, o->http, o->est);
		if (text == NULL) {
			fg_seterr(err, sizeof err, "out of memory");
			goto fail;
		}
		if (fg_write_file_atomic(conf, text, strlen(text), 0640, (uid_t)-1, (gid_t)-1, err,
					 sizeof err) != 0)
			goto fail;
		wrote_conf = 1;
	}
	cfg = config_load(o->state, err, sizeof err);
	if (cfg == NULL)
		goto fail;
	st = store_open(cfg->store_path, 1, err, sizeof err);
	if (st == NULL)
		goto fail;
	bs = backends_open(cfg, 1, err, sizeof err);
	if (bs == NULL)
		goto fail;
	store_audit(st, "gateway.init", NULL, NULL, "{}", fg_now(), NULL, 0);
	/* An empty CRL from the start, so relying parties find one. */
	if (crl_refresh(cfg, bs, st, fg_now(), 1, err, sizeof err) < 0)
		goto fail;
	if (cfg->est_listen[0] && init_est_cert(cfg, err, sizeof err) != 0)
		goto fail;

	printf("initialised gateway in %s\n", cfg->state_dir);
	printf("  config:     %s%s\n", conf, adopt ? " (existing, kept as it is)" : "");
	printf("  policy:     %s\n", cfg->policy_path);
	printf("  store:      %s\n", cfg->store_path);
	printf("  listen:     %s\n", cfg->listen);
	if (cfg->http_listen[0])
		printf("  http:       http://%s/ (docs/http.md)\n", cfg->http_listen);
	if (cfg->est_listen[0])
		printf("  est:        https://%s/.well-known/est/ (docs/est.md; TLS certificate %s)\n",
		       cfg->est_listen, cfg->est_cert);
	printf("  CURVE key:  %s\n", pub);
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend *b = backends_find(bs, cfg->backends[i].name);
		struct fg_cert_list cl;
		memset(&cl, 0, sizeof cl);
		if (b && b->ops->cacerts && b->ops->cacerts(b->state, &cl, err, sizeof err) == 0 && cl.n) {
			X509 *x = fg_cert_from_der(cl.der[0], cl.len[0], NULL, 0);
			struct fg_cert_info ci;
			if (x && fg_cert_info(x, &ci, NULL, 0) == 0)
				printf("  backend %s: CA %s\n", cfg->backends[i].name, ci.subject);
			X509_free(x);
		}
		fg_cert_list_clear(&cl);
	}
	printf("next: fleetgated --state %s\n", o->state);
	rc = EXIT_OK;
	goto out;
fail:
	fprintf(stderr, "fleetgate init: %s\n", err);
	if (wrote_conf)
		unlink(conf);   /* so that init can simply be run again */
out:
	free(text);
	backends_free(bs);
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- shared helpers ---- */

static int open_state(const struct opts *o, struct gw_config **cfg, struct store **st)
{
	char err[1024];
	*cfg = NULL;
	*st = NULL;
	if (need_state(o))
		return EXIT_USAGE;
	*cfg = config_load(o->state, err, sizeof err);
	if (*cfg == NULL) {
		fprintf(stderr, "fleetgate: %s\n", err);
		return EXIT_FAIL;
	}
	*st = store_open((*cfg)->store_path, 0, err, sizeof err);
	if (*st == NULL) {
		fprintf(stderr, "fleetgate: %s\n", err);
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* The CLI's connection to a running fleetgated's admin socket, opened by
 * cli_backends_open and kept until the process exits. */
static struct admin_client *cli_admin;

/* The backends for an operator command. While fleetgated runs, the local
 * CA key stays in its signer process: the plugins sign (CRLs) through the
 * admin socket and never read the key. Offline, they load it themselves.
 * A daemon that refuses us is an error, not a reason to read the key
 * behind its back. */
static struct backends *cli_backends_open(const struct gw_config *cfg, char *err, size_t errlen)
{
	if (cli_admin == NULL) {
		char aerr[768] = "";
		if (admin_connect(cfg, &cli_admin, aerr, sizeof aerr) < 0) {
			fg_seterr(err, errlen, "fleetgated is running but its admin socket refused this command: %s", aerr);
			return NULL;
		}
	}
	if (cli_admin != NULL)
		return backends_open_signer(cfg, 0, admin_client_sign, cli_admin, err, errlen);
	return backends_open(cfg, 0, err, errlen);
}

/* PEM of every backend's CA certificates: the trust anchors of a bundle. */
static char *anchors_pem(const struct gw_config *cfg, char *err, size_t errlen)
{
	struct backends *bs = cli_backends_open(cfg, err, errlen);
	char *pem = NULL;
	size_t len = 0;
	if (bs == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend *b = backends_find(bs, cfg->backends[i].name);
		struct fg_cert_list cl;
		memset(&cl, 0, sizeof cl);
		if (b == NULL || b->ops->cacerts == NULL)
			continue;
		if (b->ops->cacerts(b->state, &cl, err, errlen) != 0) {
			fprintf(stderr, "fleetgate: warning: backend %s gave no CA certificates (%s); devices with this bundle will not trust certificates it issues\n",
				cfg->backends[i].name, err);
			continue;
		}
		for (size_t j = 0; j < cl.n; j++) {
			X509 *x = fg_cert_from_der(cl.der[j], cl.len[j], NULL, 0);
			char *one = x ? fg_cert_to_pem(x) : NULL;
			if (one != NULL && (pem == NULL || strstr(pem, one) == NULL)) {
				size_t ol = strlen(one);
				char *n = realloc(pem, len + ol + 1);
				if (n != NULL) {
					memcpy(n + len, one, ol + 1);
					pem = n;
					len += ol;
				}
			}
			free(one);
			X509_free(x);
		}
		fg_cert_list_clear(&cl);
	}
	backends_free(bs);
	if (pem == NULL)
		fg_seterr(err, errlen, "no backend offers CA certificates for the bundle's trust anchors");
	return pem;
}

/* An endpoint a device can connect to, from the listen endpoint: a wildcard
 * address becomes loopback (the operator overrides with --endpoint). */
static void endpoint_from_listen(const char *listen, char *out, size_t outlen)
{
	const char *p;
	if (strncmp(listen, "tcp://*:", 8) == 0)
		snprintf(out, outlen, "tcp://127.0.0.1:%s", listen + 8);
	else if (strncmp(listen, "tcp://0.0.0.0:", 14) == 0)
		snprintf(out, outlen, "tcp://127.0.0.1:%s", listen + 14);
	else if ((p = strstr(listen, "[::]:")) != NULL)
		snprintf(out, outlen, "tcp://[::1]:%s", p + 5);
	else
		fg_strlcpy(out, listen, outlen);
}

/* ---- token ---- */

/* The --bind KEY=VALUE options as a JSON object text in *out (malloc'd;
 * NULL when there are none). 0, or -1 after saying what is wrong. */
static int token_bound_json(const struct opts *o, char **out)
{
	char err[512];
	json_t *j = NULL;
	*out = NULL;
	if (o->nbinds == 0)
		return 0;
	j = json_object();
	for (int i = 0; i < o->nbinds; i++) {
		char key[64];
		const char *eq = strchr(o->binds[i], '=');
		if (eq == NULL || eq == o->binds[i] || (size_t)(eq - o->binds[i]) >= sizeof key) {
			fprintf(stderr, "fleetgate: --bind takes KEY=VALUE, e.g. --bind serial=ABC123 or --bind tpm=yes; not '%s'\n",
				o->binds[i]);
			goto fail;
		}
		memcpy(key, o->binds[i], (size_t)(eq - o->binds[i]));
		key[eq - o->binds[i]] = '\0';
		if (binding_valid(key, eq + 1, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate: --bind %s: %s\n", o->binds[i], err);
			goto fail;
		}
		if (json_object_get(j, key) != NULL) {
			fprintf(stderr, "fleetgate: --bind %s given twice\n", key);
			goto fail;
		}
		json_object_set_new(j, key, json_string(eq + 1));
	}
	*out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	return *out ? 0 : -1;
fail:
	json_decref(j);
	return -1;
}

static int cmd_token(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	struct fg_bundle b;
	char err[1024] = "", token[FG_TOKEN_LEN + 1], hash[65], id[24], when[32];
	int rc;

	memset(&b, 0, sizeof b);
	if (o->argc < 1 || strcmp(o->argv[0], "create") != 0 || o->argc != 1) {
		fprintf(stderr, "fleetgate: usage: fleetgate token create --state DIR --group G "
			"[--uses N] [--ttl D] [--bundle FILE]\n");
		return EXIT_USAGE;
	}
	if ((o->group == NULL && o->device == NULL) || (o->group && (o->group[0] == '\0' || strlen(o->group) > 63))) {
		fprintf(stderr, "fleetgate: --group NAME is required (1-63 characters): the device group the token enrolls into\n");
		return EXIT_USAGE;
	}
	char *bound = NULL, group_buf[64] = "";
	const char *group = o->group;
	if (token_bound_json(o, &bound) != 0)
		return EXIT_USAGE;
	int64_t ttl = fg_parse_duration(o->ttl);
	if (ttl <= 0) {
		fprintf(stderr, "fleetgate: --ttl '%s' is not a duration; use e.g. 3600, 90m, 1h, 7d\n", o->ttl);
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK) {
		free(bound);
		return rc;
	}
	rc = EXIT_FAIL;
	if (o->device != NULL) {
		/* a device token enrolls into the pre-registered device's group */
		struct store_device d;
		memset(&d, 0, sizeof d);
		int r = store_device_get(st, o->device, &d, err, sizeof err);
		fg_strlcpy(group_buf, d.group, sizeof group_buf);
		store_device_clear(&d);
		if (r <= 0) {
			if (r == 0)
				fg_seterr(err, sizeof err, "no device %s; `fleetgate device list` shows the ids", o->device);
			goto fail;
		}
		if (group != NULL && strcmp(group, group_buf) != 0) {
			fg_seterr(err, sizeof err, "device %s is in group '%s', not '%s'; drop --group", o->device,
				  group_buf, group);
			goto fail;
		}
		group = group_buf;
	}
	int64_t now = fg_now(), expires = now + ttl;
	if (fg_token_new(token) != 0) {
		fg_seterr(err, sizeof err, "cannot draw random bytes for a token");
		goto fail;
	}
	fg_token_hash(token, hash);
	if (o->bundle != NULL) {
		/* Build the bundle's pieces before storing the token, so a
		 * failure leaves no token nobody holds. */
		if (o->endpoint)
			fg_strlcpy(b.endpoint, o->endpoint, sizeof b.endpoint);
		else
			endpoint_from_listen(cfg->listen, b.endpoint, sizeof b.endpoint);
		char pub[41], sec[41];
		if (fg_curve_load(cfg->curve_key_path, 0, pub, sec, err, sizeof err) != 0)
			goto fail;
		OPENSSL_cleanse(sec, sizeof sec);
		fg_strlcpy(b.server_key, pub, sizeof b.server_key);
		fg_strlcpy(b.token, token, sizeof b.token);
		fg_strlcpy(b.group, group, sizeof b.group);
		b.expires = expires;
		b.anchors_pem = anchors_pem(cfg, err, sizeof err);
		if (b.anchors_pem == NULL)
			goto fail;
	}
	if (bound != NULL || o->device != NULL) {
		if (store_token_add_bound(st, hash, group, o->uses, expires, o->device, bound, now, id, err,
					  sizeof err) != 0)
			goto fail;
	} else if (store_token_add(st, hash, group, o->uses, expires, now, id, err, sizeof err) != 0) {
		goto fail;
	}
	if (o->bundle != NULL && fg_bundle_write(o->bundle, &b, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate: token %s was created but the bundle could not be written: %s\n",
			id, err);
		goto out;
	}
	char detail[256];
	snprintf(detail, sizeof detail, "{\"token\":\"%s\",\"group\":\"%s\",\"uses\":%d,\"expires\":%lld}",
		 id, group, o->uses, (long long)expires);
	if (bound == NULL && o->device == NULL)   /* else store_token_add_bound wrote it */
		store_audit(st, "token.create", NULL, NULL, detail, now, NULL, 0);
	fg_time_iso(expires, when, sizeof when);
	if (o->json) {
		json_t *j = json_pack("{s:s, s:s, s:i, s:s}", "id", id, "group", group, "uses", o->uses,
				      "expires", when);
		if (bound)
			json_object_set_new(j, "bound", json_loads(bound, 0, NULL));
		if (o->device)
			json_object_set_new(j, "device_id", json_string(o->device));
		if (o->bundle)
			json_object_set_new(j, "bundle", json_string(o->bundle));
		else
			json_object_set_new(j, "token", json_string(token));
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(j);
	} else if (o->bundle) {
		printf("token %s (group %s, %d use%s, expires %s) written to bundle %s\n", id, group,
		       o->uses, o->uses == 1 ? "" : "s", when, o->bundle);
	} else {
		printf("%s\n", token);
		fprintf(stderr, "token %s: group %s, %d use%s, expires %s; it is shown only now\n", id,
			group, o->uses, o->uses == 1 ? "" : "s", when);
	}
	rc = EXIT_OK;
	goto out;
fail:
	fprintf(stderr, "fleetgate token create: %s\n", err);
out:
	OPENSSL_cleanse(token, sizeof token);
	free(bound);
	fg_bundle_clear(&b);
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- device ---- */

struct list_ctx {
	int json;
	json_t *arr;
	struct store *st;
	long n;
};

static int print_device(void *arg, const struct store_device *d)
{
	struct list_ctx *lc = arg;
	char created[32], seen[32];
	fg_time_iso(d->created_at, created, sizeof created);
	if (d->last_seen > 0)
		fg_time_iso(d->last_seen, seen, sizeof seen);
	else
		fg_strlcpy(seen, "-", sizeof seen);
	if (lc->json) {
		json_array_append_new(lc->arr, fj_device(d));
	} else {
		printf("%-20s %-8s %-12s %-24s %-20s %s\n", d->id, store_device_state_name(d->state),
		       d->group, d->hostname, created, seen);
	}
	lc->n++;
	return 0;
}

static int print_cert(void *arg, const struct store_cert *c)
{
	struct list_ctx *lc = arg;
	char nb[32], na[32];
	fg_time_iso(c->not_before, nb, sizeof nb);
	fg_time_iso(c->not_after, na, sizeof na);
	const char *status = c->revoked ? "revoked" : c->not_after <= fg_now() ? "expired" : "valid";
	if (lc->json) {
		json_array_append_new(lc->arr, fj_cert(c, fg_now()));
	} else {
		printf("%-34s %-20s %-10s %-8s %-20s %-7s %s\n", c->serial_hex, c->device_id, c->slot,
		       c->backend, na, status, c->subject);
	}
	lc->n++;
	return 0;
}

static int finish_list(struct list_ctx *lc, int rc)
{
	if (lc->json) {
		if (rc == 0) {
			json_dumpf(lc->arr, stdout, JSON_INDENT(2));
			putchar('\n');
		}
		json_decref(lc->arr);
	}
	return rc;
}

struct revoke_ctx {
	struct backends *bs;
	int failures;
};

/* After the store has revoked a certificate, tell its backend too. */
static int revoke_upstream(void *arg, const char *serial, const char *backend,
			   const unsigned char *der, size_t der_len)
{
	struct revoke_ctx *rc = arg;
	char err[512] = "";
	struct backend *b = rc->bs ? backends_find(rc->bs, backend) : NULL;
	if (b == NULL || b->ops->revoke == NULL) {
		fprintf(stderr, "warning: certificate %s is revoked in fleetgate, but backend %s is not loaded to revoke it upstream\n",
			serial, backend);
		rc->failures++;
		return 0;
	}
	if (b->ops->revoke(b->state, der, der_len, FG_REVOKE_CESSATION, err, sizeof err) != 0) {
		fprintf(stderr, "warning: backend %s could not revoke certificate %s: %s\n", backend,
			serial, err);
		rc->failures++;
		return 0;
	}
	printf("revoked certificate %s (backend %s)\n", serial, backend);
	return 0;
}

/* After a revocation: publish the CRLs of the backends that make them,
 * so that the revoked certificates are listed at once. */
static void revoke_publish_crls(const struct gw_config *cfg, struct backends *bs, struct store *st,
				struct revoke_ctx *rctx)
{
	char err[1024] = "";
	int n = crl_refresh(cfg, bs, st, fg_now(), 1, err, sizeof err);

	if (n < 0) {
		fprintf(stderr, "warning: the CRL could not be published: %s; the revocation is recorded, and a running fleetgated with http enabled publishes the CRL within a minute\n",
			err);
		rctx->failures++;
	} else if (n > 0) {
		printf("published %d CRL%s\n", n, n == 1 ? "" : "s");
	}
}

/* ---- device show / retire / command ---- */

static int device_show(const struct opts *o, struct store *st)
{
	char err[1024] = "";
	json_t *doc = NULL;
	int r = fj_device_doc(st, o->argv[1], fg_now(), &doc, err, sizeof err);
	if (r <= 0) {
		fprintf(stderr, "fleetgate device show: %s\n",
			r < 0 ? err : "no such device; `fleetgate device list` shows the ids");
		return EXIT_FAIL;
	}
	if (o->json) {
		json_dumpf(doc, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(doc);
		return EXIT_OK;
	}
	json_t *facts = json_object_get(doc, "facts"), *certs = json_object_get(doc, "certificates");
	json_t *cmds = json_object_get(doc, "commands"), *hist = json_object_get(doc, "history");
	const char *seen = json_string_value(json_object_get(doc, "last_seen"));
	printf("device     %s\nstate      %s\ngroup      %s\nhostname   %s\ncreated    %s\nlast seen  %s\n",
	       json_string_value(json_object_get(doc, "id")), json_string_value(json_object_get(doc, "state")),
	       json_string_value(json_object_get(doc, "group")), json_string_value(json_object_get(doc, "hostname")),
	       json_string_value(json_object_get(doc, "created")), seen && *seen ? seen : "never");
	if (json_is_object(facts)) {
		const char *k;
		json_t *v;
		printf("facts\n");
		json_object_foreach(facts, k, v) {
			char *txt = json_dumps(v, JSON_ENCODE_ANY);
			printf("  %-20s %s\n", k, txt ? txt : "?");
			free(txt);
		}
	}
	size_t i;
	json_t *v;
	printf("certificates (%zu)\n", json_array_size(certs));
	json_array_foreach(certs, i, v)
		printf("  %-34s %-10s %-8s until %s  %s  %s\n", json_string_value(json_object_get(v, "serial")),
		       json_string_value(json_object_get(v, "slot")), json_string_value(json_object_get(v, "status")),
		       json_string_value(json_object_get(v, "not_after")), json_string_value(json_object_get(v, "backend")),
		       json_string_value(json_object_get(v, "subject")));
	printf("commands (%zu)\n", json_array_size(cmds));
	json_array_foreach(cmds, i, v)
		printf("  %-20s %-12s %-10s %-9s %s %s\n", json_string_value(json_object_get(v, "id")),
		       json_string_value(json_object_get(v, "kind")),
		       *json_string_value(json_object_get(v, "slot")) ? json_string_value(json_object_get(v, "slot")) : "(all)",
		       json_string_value(json_object_get(v, "state")), json_string_value(json_object_get(v, "created")),
		       json_string_value(json_object_get(v, "result")));
	printf("history (last %zu)\n", json_array_size(hist));
	json_array_foreach(hist, i, v) {
		char *dt = json_dumps(json_object_get(v, "detail"), JSON_COMPACT);
		printf("  %6lld %s %-16s %s\n", (long long)json_integer_value(json_object_get(v, "seq")),
		       json_string_value(json_object_get(v, "time")), json_string_value(json_object_get(v, "kind")),
		       dt ? dt : "");
		free(dt);
	}
	json_decref(doc);
	return EXIT_OK;
}

struct group_ctx {
	const char *group;
	char (*ids)[40];
	size_t n, cap;
};

static int collect_group(void *arg, const struct store_device *d)
{
	struct group_ctx *g = arg;
	if (strcmp(d->group, g->group) != 0 || (d->state != DEVICE_ACTIVE && d->state != DEVICE_REGISTERED))
		return 0;
	if (g->n == g->cap) {
		size_t nc = g->cap ? g->cap * 2 : 64;
		char (*ni)[40] = realloc(g->ids, nc * sizeof *ni);
		if (ni == NULL)
			return 1;
		g->ids = ni;
		g->cap = nc;
	}
	fg_strlcpy(g->ids[g->n++], d->id, sizeof g->ids[0]);
	return 0;
}

static int device_command(const struct opts *o, struct store *st)
{
	static const char *const kinds[] = { "renew", "rekey", "update-trust", "rebootstrap", NULL };
	char err[1024] = "", id[24];
	const char *kind = o->argv[o->argc - 1];
	size_t k = 0;
	while (kinds[k] && strcmp(kinds[k], kind) != 0)
		k++;
	if ((o->group == NULL) != (o->argc == 3) || o->argc < 2 || kinds[k] == NULL) {
		fprintf(stderr, "fleetgate: usage: fleetgate device command --state DIR (DEVICE | --group G) renew|rekey|update-trust|rebootstrap [--slot S]\n");
		return EXIT_USAGE;
	}
	if (o->within != NULL) {
		int64_t d = fg_parse_duration(o->within);
		if (o->group == NULL || strcmp(kind, "renew") != 0) {
			fprintf(stderr, "fleetgate device command: --within moves a group's renewal windows: "
					"use it as `device command --group G renew --within 48h`\n");
			return EXIT_USAGE;
		}
		if (d < 3600 || d > 366LL * 86400) {
			fprintf(stderr, "fleetgate device command: --within must be a duration from 1h to 366d "
					"(48h, 7d), not '%s'\n", o->within);
			return EXIT_USAGE;
		}
		long moved = 0;
		int64_t now = fg_now();
		if (store_renewal_pull_in(st, o->group, o->slot, now, now + d, &moved, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate device command: %s\n", err);
			return EXIT_FAIL;
		}
		if (moved == 0) {
			printf("no current, valid certificate of group %s%s%s is left to move (`fleetgate cert list` "
			       "shows them); nothing changed\n", o->group, o->slot ? " slot " : "", o->slot ? o->slot : "");
			return EXIT_OK;
		}
		printf("%ld certificate%s of group %s%s%s will renew within %s, spread over the hours; the "
		       "devices take their new windows at their next check-in\n", moved, moved == 1 ? "" : "s",
		       o->group, o->slot ? " slot " : "", o->slot ? o->slot : "", o->within);
		return EXIT_OK;
	}
	if (o->slot && strcmp(kind, "update-trust") == 0) {
		fprintf(stderr, "fleetgate device command: update-trust applies to the whole device; drop --slot\n");
		return EXIT_USAGE;
	}
	if (o->group == NULL) {
		if (store_command_add(st, o->argv[1], kind, o->slot, fg_now(), id, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate device command: %s\n", err);
			return EXIT_FAIL;
		}
		printf("command %s queued: %s %s for device %s; it is delivered at the next check-in\n", id, kind,
		       o->slot ? o->slot : "(every slot)", o->argv[1]);
		return EXIT_OK;
	}
	struct group_ctx g = { o->group, NULL, 0, 0 };
	if (store_device_list(st, collect_group, &g, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate device command: %s\n", err);
		free(g.ids);
		return EXIT_FAIL;
	}
	if (g.n == 0) {
		fprintf(stderr, "fleetgate device command: no active device in group '%s'\n", o->group);
		free(g.ids);
		return EXIT_FAIL;
	}
	size_t done = 0;
	for (size_t i = 0; i < g.n; i++) {
		if (store_command_add(st, g.ids[i], kind, o->slot, fg_now(), id, err, sizeof err) != 0)
			fprintf(stderr, "fleetgate device command: device %s: %s\n", g.ids[i], err);
		else
			done++;
	}
	printf("command %s queued for %zu of %zu device(s) in group %s\n", kind, done, g.n, o->group);
	free(g.ids);
	return done == g.n ? EXIT_OK : EXIT_FAIL;
}

static int cmd_device_ops(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	const char *sub = o->argv[0];
	int rc;

	if (strcmp(sub, "command") != 0 && o->argc != 2) {
		fprintf(stderr, "fleetgate: usage: fleetgate device %s --state DIR DEVICE%s\n", sub,
			strcmp(sub, "show") == 0 ? " [--json]" : "");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	if (strcmp(sub, "show") == 0) {
		rc = device_show(o, st);
	} else if (strcmp(sub, "command") == 0) {
		rc = device_command(o, st);
	} else {
		struct store_device d;
		memset(&d, 0, sizeof d);
		int r = store_device_get(st, o->argv[1], &d, err, sizeof err);
		store_device_clear(&d);
		if (r <= 0) {
			fprintf(stderr, "fleetgate device retire: %s\n",
				r < 0 ? err : "no such device; `fleetgate device list` shows the ids");
			rc = EXIT_FAIL;
			goto out;
		}
		struct revoke_ctx rctx = { cli_backends_open(cfg, err, sizeof err), 0 };
		if (rctx.bs == NULL)
			fprintf(stderr, "warning: backends not loaded (%s)\n", err);
		int n = store_device_retire(st, o->argv[1], fg_now(), revoke_upstream, &rctx, err, sizeof err);
		if (n > 0 && rctx.bs != NULL)
			revoke_publish_crls(cfg, rctx.bs, st, &rctx);
		backends_free(rctx.bs);
		if (n < 0) {
			fprintf(stderr, "fleetgate device retire: %s\n", err);
			rc = EXIT_FAIL;
		} else {
			printf("device %s retired (%d certificate%s revoked); its history is kept\n", o->argv[1], n,
			       n == 1 ? "" : "s");
			rc = rctx.failures ? EXIT_FAIL : EXIT_OK;
		}
	}
out:
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- audit tail ---- */

struct tail_ctx {
	int json;
	long long last;
};

static int print_audit(void *arg, const struct store_audit_rec *a)
{
	struct tail_ctx *t = arg;
	char ts[32];
	fg_time_iso(a->ts, ts, sizeof ts);
	if (t->json) {
		json_t *o = fj_audit(a);
		json_dumpf(o, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(o);
	} else {
		printf("%6lld %s %-16s %-20s %s\n", a->seq, ts, a->kind, a->device_id[0] ? a->device_id : "-",
		       a->detail ? a->detail : "");
	}
	t->last = a->seq;
	return 0;
}

static volatile sig_atomic_t tail_stop;

static void on_tail_signal(int sig)
{
	(void)sig;
	tail_stop = 1;
}

static int cmd_audit_tail(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	struct tail_ctx t = { o->json, 0 };
	int rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	rc = EXIT_FAIL;
	if (store_audit_list(st, o->device, 0, o->lines, 1, print_audit, &t, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate audit tail: %s\n", err);
		goto out;
	}
	fflush(stdout);
	if (!o->follow) {
		rc = EXIT_OK;
		goto out;
	}
	/* --follow: wake on writes to the store's WAL (inotify), and at least
	 * once a second in case the writer is on another file system view */
	char wal[PATH_MAX + 8];
	snprintf(wal, sizeof wal, "%s-wal", cfg->store_path);
	int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	int wd = in >= 0 ? inotify_add_watch(in, wal, IN_MODIFY) : -1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_tail_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!tail_stop) {
		struct pollfd p = { in, POLLIN, 0 };
		if (wd >= 0 && poll(&p, 1, 1000) > 0) {
			char buf[4096];
			while (read(in, buf, sizeof buf) > 0)
				;   /* drained: the events only say "look again" */
		} else if (wd < 0) {
			sleep(1);
		}
		if (store_audit_list(st, o->device, t.last, 0, 0, print_audit, &t, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate audit tail: %s\n", err);
			break;
		}
		fflush(stdout);
	}
	if (in >= 0)
		close(in);
	rc = EXIT_OK;
out:
	store_free(st);
	config_free(cfg);
	return rc;
}

static int cmd_device(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	int rc;

	if (o->argc < 1) {
		fprintf(stderr, "fleetgate: usage: fleetgate device list|revoke --state DIR ...\n");
		return EXIT_USAGE;
	}
	if (strcmp(o->argv[0], "show") == 0 || strcmp(o->argv[0], "retire") == 0 ||
	    strcmp(o->argv[0], "command") == 0)
		return cmd_device_ops(o);
	if (strcmp(o->argv[0], "list") == 0) {
		rc = open_state(o, &cfg, &st);
		if (rc != EXIT_OK)
			return rc;
		struct list_ctx lc = { o->json, o->json ? json_array() : NULL, st, 0 };
		if (!o->json)
			printf("%-20s %-8s %-12s %-24s %-20s %s\n", "DEVICE", "STATE", "GROUP", "HOSTNAME",
			       "CREATED", "LAST SEEN");
		rc = store_device_list(st, print_device, &lc, err, sizeof err);
		if (finish_list(&lc, rc) != 0) {
			fprintf(stderr, "fleetgate device list: %s\n", err);
			rc = EXIT_FAIL;
		} else {
			rc = EXIT_OK;
		}
	} else if (strcmp(o->argv[0], "revoke") == 0) {
		if (o->argc != 2) {
			fprintf(stderr, "fleetgate: usage: fleetgate device revoke --state DIR DEVICE\n");
			return EXIT_USAGE;
		}
		rc = open_state(o, &cfg, &st);
		if (rc != EXIT_OK)
			return rc;
		struct store_device d;
		memset(&d, 0, sizeof d);
		int r = store_device_get(st, o->argv[1], &d, err, sizeof err);
		store_device_clear(&d);
		if (r <= 0) {
			fprintf(stderr, "fleetgate device revoke: %s\n",
				r < 0 ? err : "no such device; `fleetgate device list` shows the ids");
			rc = EXIT_FAIL;
			goto out;
		}
		struct revoke_ctx rctx = { cli_backends_open(cfg, err, sizeof err), 0 };
		if (rctx.bs == NULL)
			fprintf(stderr, "warning: backends not loaded (%s)\n", err);
		int n = store_device_revoke(st, o->argv[1], fg_now(), revoke_upstream, &rctx, err,
					    sizeof err);
		if (n > 0 && rctx.bs != NULL)
			revoke_publish_crls(cfg, rctx.bs, st, &rctx);
		backends_free(rctx.bs);
		if (n < 0) {
			fprintf(stderr, "fleetgate device revoke: %s\n", err);
			rc = EXIT_FAIL;
		} else {
			printf("device %s revoked (%d certificate%s revoked)\n", o->argv[1], n,
			       n == 1 ? "" : "s");
			rc = rctx.failures ? EXIT_FAIL : EXIT_OK;
		}
	} else {
		fprintf(stderr, "fleetgate: unknown device command '%s'; use list, show, revoke, retire or command\n",
			o->argv[0]);
		return EXIT_USAGE;
	}
out:
	store_free(st);
	config_free(cfg);
	return rc;
}

static int cmd_cert(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	int rc;

	if (o->argc != 1 || strcmp(o->argv[0], "list") != 0) {
		fprintf(stderr, "fleetgate: usage: fleetgate cert list --state DIR [--device DEVICE] [--json]\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	struct list_ctx lc = { o->json, o->json ? json_array() : NULL, st, 0 };
	if (!o->json)
		printf("%-34s %-20s %-10s %-8s %-20s %-7s %s\n", "SERIAL", "DEVICE", "SLOT", "BACKEND",
		       "NOT AFTER", "STATUS", "SUBJECT");
	rc = store_cert_list(st, o->device, print_cert, &lc, err, sizeof err);
	if (finish_list(&lc, rc) != 0) {
		fprintf(stderr, "fleetgate cert list: %s\n", err);
		rc = EXIT_FAIL;
	} else {
		rc = EXIT_OK;
	}
	store_free(st);
	config_free(cfg);
	return rc;
}

static int cmd_audit(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	long n = 0;
	int rc;

	if (o->argc == 1 && strcmp(o->argv[0], "tail") == 0)
		return cmd_audit_tail(o);
	if (o->argc != 1 || strcmp(o->argv[0], "verify") != 0) {
		fprintf(stderr, "fleetgate: usage: fleetgate audit verify|tail --state DIR\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	if (store_audit_verify(st, &n, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate audit verify: %s\n", err);
		rc = EXIT_FAIL;
	} else {
		printf("audit log intact: %ld records\n", n);
		rc = EXIT_OK;
	}
	store_free(st);
	config_free(cfg);
	return rc;
}

/* An operator command carried out by a backend's plugin (the admin op,
 * appended during ABI 1): its text on stdout, an audit record, and the
 * plugin's message on failure. An exit code. */
static int backend_admin(struct store *st, struct backend *b, const char *verb, const char *what)
{
	char err[1024] = "", *text = NULL;
	if (b->ops->struct_size < offsetof(struct fg_backend_ops, admin) + sizeof b->ops->admin ||
	    b->ops->admin == NULL) {
		fprintf(stderr, "%s: backend %s (plugin %s) has no such command; it works on ACME backends only\n",
			what, b->name, b->ops->name);
		return EXIT_FAIL;
	}
	if (b->ops->admin(b->state, verb, NULL, 0, &text, err, sizeof err) != 0) {
		fprintf(stderr, "%s: %s\n", what, err[0] ? err : "the backend failed without saying why");
		free(text);
		return EXIT_FAIL;
	}
	if (text != NULL)
		printf("%s\n", text);
	json_t *d = json_pack("{s:s, s:s}", "backend", b->name, "verb", verb);
	char *detail = d ? json_dumps(d, JSON_COMPACT) : NULL;
	store_audit(st, "backend.admin", NULL, NULL, detail ? detail : "{}", fg_now(), NULL, 0);
	free(detail);
	json_decref(d);
	free(text);
	return EXIT_OK;
}

static int cmd_backend(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	struct backends *bs = NULL;
	char err[1024] = "";
	const char *sub = o->argc > 0 ? o->argv[0] : "";
	int rc;

	int want = strcmp(sub, "cert") == 0 ? 3 : 2;
	if ((strcmp(sub, "cacerts") != 0 && strcmp(sub, "crl") != 0 && strcmp(sub, "cert") != 0 &&
	     strcmp(sub, "acme-rollover") != 0) ||
	    o->argc != want) {
		fprintf(stderr, "fleetgate: usage: fleetgate backend cacerts|crl|acme-rollover --state DIR NAME, or backend cert --state DIR NAME SERIAL\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	rc = EXIT_FAIL;
	if (config_backend(cfg, o->argv[1]) == NULL) {
		fprintf(stderr, "fleetgate backend: no backend named '%s' in the gateway config\n", o->argv[1]);
		goto out;
	}
	bs = cli_backends_open(cfg, err, sizeof err);
	struct backend *b = bs ? backends_find(bs, o->argv[1]) : NULL;
	if (b == NULL) {
		fprintf(stderr, "fleetgate backend: %s\n", err);
		goto out;
	}
	unsigned char *der = NULL;
	size_t len = 0;
	const unsigned char *p;
	if (strcmp(sub, "cacerts") == 0) {
		struct fg_cert_list l;
		memset(&l, 0, sizeof l);
		if (b->ops->cacerts == NULL || b->ops->cacerts(b->state, &l, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate backend cacerts: %s\n", err[0] ? err : "the backend offers none");
			goto out;
		}
		for (size_t i = 0; i < l.n; i++) {
			p = l.der[i];
			X509 *x = d2i_X509(NULL, &p, (long)l.len[i]);
			if (x != NULL)
				PEM_write_X509(stdout, x);
			X509_free(x);
		}
		fg_cert_list_clear(&l);
		rc = EXIT_OK;
		goto out;
	}
	if (strcmp(sub, "acme-rollover") == 0) {
		rc = backend_admin(st, b, "account-rollover", "fleetgate backend acme-rollover");
		goto out;
	}
	if (strcmp(sub, "crl") == 0) {
		if (b->ops->fetch_crl == NULL) {
			fprintf(stderr, "fleetgate backend crl: backend %s (plugin %s) cannot fetch a CRL\n", b->name, b->ops->name);
			goto out;
		}
		if (b->ops->fetch_crl(b->state, &der, &len, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate backend crl: %s\n", err);
			goto out;
		}
		p = der;
		X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (crl != NULL && PEM_write_X509_CRL(stdout, crl) == 1)
			rc = EXIT_OK;
		else
			fprintf(stderr, "fleetgate backend crl: the CA's CRL cannot be read\n");
		X509_CRL_free(crl);
	} else {
		if (b->ops->fetch_cert == NULL) {
			fprintf(stderr, "fleetgate backend cert: backend %s (plugin %s) cannot fetch certificates\n", b->name, b->ops->name);
			goto out;
		}
		if (b->ops->fetch_cert(b->state, o->argv[2], &der, &len, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate backend cert: %s\n", err);
			goto out;
		}
		p = der;
		X509 *x = d2i_X509(NULL, &p, (long)len);
		if (x != NULL && PEM_write_X509(stdout, x) == 1)
			rc = EXIT_OK;
		else
			fprintf(stderr, "fleetgate backend cert: the CA's answer cannot be read\n");
		X509_free(x);
	}
	free(der);
out:
	backends_free(bs);
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- status ---- */

/* One backend's health for status: opened on its own (so one broken
 * backend does not hide the others) and asked for its CA certificates;
 * with its published CRL when it makes one. Returns a JSON object with
 * "ok" and either the CA or the error. */
static json_t *backend_health(const struct gw_config *cfg, const struct config_backend *cb)
{
	struct gw_config one = *cfg;
	char err[1024] = "";

	one.backends = (struct config_backend *)cb;
	one.nbackends = 1;
	struct backends *bs = cli_backends_open(&one, err, sizeof err);
	json_t *o = fj_backend_health(cfg, cb, bs ? backends_find(bs, cb->name) : NULL, err);
	backends_free(bs);
	return o;
}

/* What the running daemon says of itself over its admin socket:
 * {"running": false} when none runs, with "error" when it refuses us. */
static json_t *daemon_status(const struct gw_config *cfg)
{
	char err[768] = "";
	json_t *o = NULL;

	if (cli_admin == NULL && admin_connect(cfg, &cli_admin, err, sizeof err) < 0)
		return json_pack("{s:b, s:s}", "running", 1, "error", err);
	if (cli_admin == NULL)
		return json_pack("{s:b}", "running", 0);
	char *text = admin_client_status(cli_admin, err, sizeof err);
	if (text != NULL)
		o = json_loads(text, 0, NULL);
	free(text);
	if (o == NULL)
		return json_pack("{s:b, s:s}", "running", 1, "error", err[0] ? err : "unreadable status");
	json_object_set_new(o, "running", json_true());
	return o;
}

static void print_daemon_text(const json_t *d)
{
	const json_t *sg = json_object_get(d, "signer");
	if (!json_is_true(json_object_get(d, "running"))) {
		printf("daemon: not running\n");
	} else if (json_object_get(d, "error") != NULL) {
		printf("daemon: running, but it refuses this user: %s\n", json_string_value(json_object_get(d, "error")));
	} else {
		printf("daemon: running (pid %lld); sandbox %s; ", (long long)json_integer_value(json_object_get(d, "pid")),
		       json_string_value(json_object_get(sg, "sandbox")));
		if (json_integer_value(json_object_get(sg, "pid")) > 0)
			printf("CA keys in signer process %lld (monitor %lld)\n",
			       (long long)json_integer_value(json_object_get(sg, "pid")),
			       (long long)json_integer_value(json_object_get(sg, "monitor")));
		else
			printf("no signer process (no local backend, or restarting)\n");
		const char *cf = json_string_value(json_object_get(d, "confinement"));
		if (cf != NULL)
			printf("daemon confinement: %s\n", cf);
	}
}

static void print_status_text(const json_t *j)
{
	const json_t *d = json_object_get(j, "devices"), *c = json_object_get(j, "certificates");
	const json_t *f = json_object_get(j, "failures_last_hour"), *q = json_object_get(j, "jobs_open");
	const json_t *v, *bl = json_object_get(j, "backends");
	const char *k;
	size_t i;

	printf("devices:");
	json_object_foreach((json_t *)d, k, v)
		printf(" %s %lld", k, (long long)json_integer_value(v));
	printf("\ncertificates: %lld valid, %lld revoked, %lld expired; expiring within 7 days: %lld, within 30 days: %lld\n",
	       (long long)json_integer_value(json_object_get(c, "valid")),
	       (long long)json_integer_value(json_object_get(c, "revoked")),
	       (long long)json_integer_value(json_object_get(c, "expired")),
	       (long long)json_integer_value(json_object_get(c, "expiring_7d")),
	       (long long)json_integer_value(json_object_get(c, "expiring_30d")));
	printf("failures in the last hour: %lld", (long long)json_integer_value(json_object_get(f, "total")));
	for (i = 0; fj_failure_kinds[i] != NULL; i++)
		printf("%s%s %lld", i ? ", " : " (", fj_failure_kinds[i],
		       (long long)json_integer_value(json_object_get(f, fj_failure_kinds[i])));
	printf(")\nopen jobs: %lld admitted, %lld pending\nbackends:\n",
	       (long long)json_integer_value(json_object_get(q, "admitted")),
	       (long long)json_integer_value(json_object_get(q, "pending")));
	json_array_foreach((json_t *)bl, i, v) {
		const json_t *crl = json_object_get(v, "crl");
		if (json_is_true(json_object_get(v, "ok")))
			printf("  %-12s ok      CA %s, until %s\n", json_string_value(json_object_get(v, "name")),
			       json_string_value(json_object_get(v, "ca")),
			       json_string_value(json_object_get(v, "ca_not_after")));
		else
			printf("  %-12s FAILED  %s\n", json_string_value(json_object_get(v, "name")),
			       json_string_value(json_object_get(v, "error")));
		if (crl != NULL && json_object_get(crl, "error") != NULL)
			printf("  %-12s CRL: %s\n", "", json_string_value(json_object_get(crl, "error")));
		else if (crl != NULL)
			printf("  %-12s CRL number %s, %lld revoked, next update %s%s\n", "",
			       json_string_value(json_object_get(crl, "number")),
			       (long long)json_integer_value(json_object_get(crl, "entries")),
			       json_string_value(json_object_get(crl, "next_update")),
			       json_is_true(json_object_get(crl, "fresh")) ? "" : " (STALE: start fleetgated with http, or revoke to remake it)");
	}
	print_daemon_text(json_object_get(j, "daemon"));
}

/* fleetgate status: the fleet at a glance. Exit 0 when the store and
 * every backend answer, 1 otherwise (so a monitoring check can use it). */
static int cmd_status(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	json_t *j = NULL, *bl;
	int rc, healthy = 1;

	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	if ((j = fj_summary(st, fg_now(), err, sizeof err)) == NULL) {
		fprintf(stderr, "fleetgate status: %s\n", err);
		rc = EXIT_FAIL;
		goto out;
	}
	bl = json_array();
	for (size_t i = 0; i < cfg->nbackends; i++) {
		json_t *b = backend_health(cfg, &cfg->backends[i]);
		if (!json_is_true(json_object_get(b, "ok")))
			healthy = 0;
		json_array_append_new(bl, b);
	}
	json_object_set_new(j, "backends", bl);
	json_object_set_new(j, "daemon", daemon_status(cfg));
	if (o->json) {
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		print_status_text(j);
	}
	rc = healthy ? EXIT_OK : EXIT_FAIL;
out:
	json_decref(j);
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- token list / show / revoke ---- */

static const char *token_state(const struct store_token_info *ti, int64_t now)
{
	if (ti->t.revoked)
		return "revoked";
	if (ti->t.uses_left <= 0)
		return "used";
	if (ti->t.expires_at <= now)
		return "expired";
	return "valid";
}

/* One token as a JSON object (the --json form of list and show). */
static json_t *token_json(const struct store_token_info *ti, int64_t now)
{
	char exp[32], created[32];
	json_t *bound = ti->bound_json ? json_loads(ti->bound_json, 0, NULL) : NULL;
	fg_time_iso(ti->t.expires_at, exp, sizeof exp);
	fg_time_iso(ti->t.created_at, created, sizeof created);
	return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:b, s:s?, s:o}", "id", ti->t.id, "state",
			 token_state(ti, now), "group", ti->t.group, "uses_left", ti->t.uses_left, "expires",
			 exp, "created", created, "revoked", ti->t.revoked,
			 "device_id", ti->device_id[0] ? ti->device_id : NULL,
			 "bound", bound ? bound : json_object());
}

/* "serial=A,tpm=yes" for the text listing, "-" for none. */
static void bound_text(const char *bound_json, char *out, size_t outlen)
{
	json_t *o = bound_json ? json_loads(bound_json, 0, NULL) : NULL;
	const char *k;
	json_t *v;
	size_t n = 0;
	fg_strlcpy(out, "-", outlen);
	json_object_foreach(o, k, v) {
		int w = snprintf(out + n, outlen - n, "%s%s=%s", n ? "," : "", k, json_string_value(v) ? json_string_value(v) : "?");
		if (w < 0 || (size_t)w >= outlen - n)
			break;
		n += (size_t)w;
	}
	json_decref(o);
}

struct token_list_ctx {
	int json;
	json_t *arr;
	int64_t now;
};

static int print_token(void *arg, const struct store_token_info *ti)
{
	struct token_list_ctx *tc = arg;
	if (tc->json) {
		json_array_append_new(tc->arr, token_json(ti, tc->now));
		return 0;
	}
	char exp[32], bt[256];
	fg_time_iso(ti->t.expires_at, exp, sizeof exp);
	bound_text(ti->bound_json, bt, sizeof bt);
	printf("%-20s %-8s %-12s %4d %-20s %-20s %s\n", ti->t.id, token_state(ti, tc->now), ti->t.group,
	       ti->t.uses_left, exp, ti->device_id[0] ? ti->device_id : "-", bt);
	return 0;
}

static int token_show(const struct opts *o, struct store *st)
{
	struct store_token_info ti;
	struct store_device d;
	char err[1024] = "", serial[65] = "", *attrs = NULL;
	int64_t now = fg_now();
	int rc = EXIT_FAIL;

	memset(&ti, 0, sizeof ti);
	memset(&d, 0, sizeof d);
	int r = store_token_info_get(st, o->argv[1], NULL, &ti, err, sizeof err);
	if (r <= 0) {
		fprintf(stderr, "fleetgate token show: %s\n",
			r < 0 ? err : "no such token; `fleetgate token list` shows the ids");
		goto out;
	}
	int have_dev = ti.device_id[0] ? store_device_get(st, ti.device_id, &d, err, sizeof err) : 0;
	if (have_dev > 0)
		store_device_attrs_get(st, ti.device_id, serial, &attrs, err, sizeof err);
	if (o->json) {
		json_t *j = token_json(&ti, now);
		if (have_dev > 0)
			json_object_set_new(j, "device", json_pack("{s:s, s:s, s:s, s:s}", "id", d.id, "state",
								  store_device_state_name(d.state), "serial", serial,
								  "hostname", d.hostname));
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(j);
	} else {
		char exp[32], created[32], bt[256];
		fg_time_iso(ti.t.expires_at, exp, sizeof exp);
		fg_time_iso(ti.t.created_at, created, sizeof created);
		bound_text(ti.bound_json, bt, sizeof bt);
		printf("token     %s\n", ti.t.id);
		printf("state     %s\n", token_state(&ti, now));
		printf("group     %s\n", ti.t.group);
		printf("uses left %d\n", ti.t.uses_left);
		printf("created   %s\n", created);
		printf("expires   %s\n", exp);
		printf("bound to  %s\n", bt);
		if (have_dev > 0)
			printf("device    %s (%s, serial %s%s%s)\n", d.id, store_device_state_name(d.state),
			       serial[0] ? serial : "-", d.hostname[0] ? ", hostname " : "", d.hostname);
		else if (ti.device_id[0])
			printf("device    %s (gone)\n", ti.device_id);
	}
	rc = EXIT_OK;
out:
	free(attrs);
	store_device_clear(&d);
	store_token_info_clear(&ti);
	return rc;
}

/* fleetgate token list|show|revoke (token create stays in cmd_token). */
static int cmd_token_ops(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "";
	const char *sub = o->argv[0];
	int rc;

	int want = strcmp(sub, "list") == 0 ? 1 : 2;
	if ((strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 && strcmp(sub, "revoke") != 0) ||
	    o->argc != want) {
		fprintf(stderr, "fleetgate: usage: fleetgate token create|list --state DIR ..., or token show|revoke --state DIR TOKEN_ID\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	rc = EXIT_FAIL;
	if (strcmp(sub, "list") == 0) {
		struct token_list_ctx tc = { o->json, o->json ? json_array() : NULL, fg_now() };
		if (!o->json)
			printf("%-20s %-8s %-12s %4s %-20s %-20s %s\n", "TOKEN", "STATE", "GROUP", "USES",
			       "EXPIRES", "DEVICE", "BOUND");
		if (store_token_list(st, print_token, &tc, err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate token list: %s\n", err);
		} else {
			if (o->json) {
				json_dumpf(tc.arr, stdout, JSON_INDENT(2));
				putchar('\n');
			}
			rc = EXIT_OK;
		}
		json_decref(tc.arr);
	} else if (strcmp(sub, "show") == 0) {
		rc = token_show(o, st);
	} else {
		int r = store_token_revoke(st, o->argv[1], fg_now(), err, sizeof err);
		if (r < 0)
			fprintf(stderr, "fleetgate token revoke: %s\n", err);
		else if (r == 0)
			fprintf(stderr, "fleetgate token revoke: no token %s; `fleetgate token list` shows the ids\n",
				o->argv[1]);
		else if (r == 2)
			printf("token %s was already revoked\n", o->argv[1]);
		else
			printf("token %s revoked: a device holding its bundle can no longer enroll with it\n",
			       o->argv[1]);
		rc = r > 0 ? EXIT_OK : EXIT_FAIL;
	}
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- policy ---- */

/* policy check: what fleetgated does before it swaps a changed policy in
 * (policy_validate), with the same limits when --state names the gateway.
 * FILE defaults to the gateway's policy. */
static int policy_check(const char *file, const struct policy_limits *lim)
{
	char err[2048] = "", fxpath[4096];
	char *text = NULL;
	size_t len = 0, ncases = 0;
	int rc = EXIT_FAIL;

	if (policy_read_source(file, &text, &len, err, sizeof err) != 0 ||
	    policy_validate(file, text, len, lim, &ncases, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate policy check: %s\n", err);
		goto out;
	}
	if (ncases > 0 && policy_fixtures_path(file, fxpath, sizeof fxpath) == 0)
		printf("%s: ok (enroll(req) defined; %zu fixtures in %s passed)\n", file, ncases, fxpath);
	else
		printf("%s: ok (enroll(req) defined; no fixtures file next to it)\n", file);
	rc = EXIT_OK;
out:
	free(text);
	return rc;
}

/* policy test: every case of every fixtures file, "ok - NAME" or
 * "not ok - NAME" with the differences, then one summary line. */
static int policy_test(const char *file, char **cases, int ncases, const struct policy_limits *lim)
{
	char err[2048] = "", fxpath[4096];
	char *deflt[1] = { fxpath };
	struct policy *p = NULL;
	size_t passed = 0, failed = 0, errors = 0;

	p = policy_new(file, lim, err, sizeof err);
	if (p == NULL) {
		fprintf(stderr, "fleetgate policy test: %s\n", err);
		return EXIT_FAIL;
	}
	if (ncases == 0) {
		if (policy_fixtures_path(file, fxpath, sizeof fxpath) != 0) {
			fprintf(stderr, "fleetgate policy test: %s: path too long\n", file);
			policy_free(p);
			return EXIT_FAIL;
		}
		cases = deflt;
		ncases = 1;
	}
	for (int i = 0; i < ncases; i++) {
		struct policy_fixtures *fx = policy_fixtures_load(cases[i], err, sizeof err);
		struct policy_fixtures_result res;
		if (fx == NULL) {
			fprintf(stderr, "fleetgate policy test: %s\n", err);
			errors++;
			continue;
		}
		printf("# %s\n", cases[i]);
		policy_fixtures_run(fx, p, stdout, &res);
		passed += res.passed;
		failed += res.failed;
		policy_fixtures_free(fx);
	}
	printf("# %s: %zu passed, %zu failed%s\n", file, passed, failed,
	       errors ? ", and some fixtures files could not be read (see above)" : "");
	policy_free(p);
	return failed || errors ? EXIT_FAIL : EXIT_OK;
}

static int cmd_policy(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct policy_limits lim = { 0, 0 };
	const char *sub = o->argc > 0 ? o->argv[0] : "";
	const char *file = o->argc > 1 ? o->argv[1] : NULL;
	char err[1024] = "";
	int rc = EXIT_USAGE;

	if (strcmp(sub, "check") != 0 && strcmp(sub, "test") != 0) {
		fprintf(stderr, "fleetgate policy: say `policy check [--state DIR] [FILE]` or "
			"`policy test [--state DIR] FILE [CASES.json...]`\n");
		return EXIT_USAGE;
	}
	if (o->state != NULL) {
		cfg = config_load(o->state, err, sizeof err);
		if (cfg == NULL) {
			fprintf(stderr, "fleetgate policy %s: %s\n", sub, err);
			return EXIT_FAIL;
		}
		lim.memory = cfg->policy_memory;
		lim.instructions = cfg->policy_instructions;
		if (file == NULL)
			file = cfg->policy_path;
	}
	if (file == NULL) {
		fprintf(stderr, "fleetgate policy %s: name the policy FILE (or give --state DIR to use "
			"the gateway's policy)\n", sub);
		goto out;
	}
	if (strcmp(sub, "check") == 0)
		rc = o->argc > 2 ? (usage(stderr), EXIT_USAGE) : policy_check(file, &lim);
	else
		rc = policy_test(file, o->argc > 2 ? o->argv + 2 : NULL, o->argc > 2 ? o->argc - 2 : 0,
				 &lim);
out:
	config_free(cfg);
	return rc;
}

/* ---- device import ---- */

static int cmd_device_import(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	struct fg_bundle tmpl;
	struct import_result res;
	char err[1024] = "";
	const char *ttl_text = o->ttl_set ? o->ttl : "30d";
	int rc;

	memset(&tmpl, 0, sizeof tmpl);
	if (o->argc != 2) {
		fprintf(stderr, "fleetgate: usage: fleetgate device import --state DIR FILE.csv [--group G] [--bundles DIR] [--endpoint E] [--ttl 30d]\n");
		return EXIT_USAGE;
	}
	int64_t ttl = fg_parse_duration(ttl_text);
	if (ttl <= 0) {
		fprintf(stderr, "fleetgate: --ttl '%s' is not a duration; use e.g. 3600, 90m, 1h, 30d\n", ttl_text);
		return EXIT_USAGE;
	}
	if (o->endpoint && o->bundles == NULL) {
		fprintf(stderr, "fleetgate: --endpoint goes into bundles; add --bundles DIR\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	rc = EXIT_FAIL;
	if (o->bundles != NULL) {
		char pub[41], sec[41];
		if (o->endpoint)
			fg_strlcpy(tmpl.endpoint, o->endpoint, sizeof tmpl.endpoint);
		else
			endpoint_from_listen(cfg->listen, tmpl.endpoint, sizeof tmpl.endpoint);
		if (fg_curve_load(cfg->curve_key_path, 0, pub, sec, err, sizeof err) != 0)
			goto fail;
		OPENSSL_cleanse(sec, sizeof sec);
		fg_strlcpy(tmpl.server_key, pub, sizeof tmpl.server_key);
		tmpl.anchors_pem = anchors_pem(cfg, err, sizeof err);
		if (tmpl.anchors_pem == NULL)
			goto fail;
	}
	struct import_opts io = {
		.path = o->argv[1],
		.group = o->group,
		.ttl = ttl,
		.bundle_dir = o->bundles,
		.tmpl = o->bundles ? &tmpl : NULL,
		.progress = isatty(STDERR_FILENO),
		.errf = stderr,
	};
	if (device_import(st, &io, &res, err, sizeof err) != 0)
		goto fail;
	printf("imported %ld device%s, %ld unchanged, wrote %ld bundle%s in %.2f s\n", res.imported,
	       res.imported == 1 ? "" : "s", res.unchanged, res.bundles, res.bundles == 1 ? "" : "s",
	       res.seconds);
	if (res.imported > 0 && o->bundles == NULL)
		fprintf(stderr, "note: no bundles written; give each device one with `fleetgate token create --state %s --device DEVICE --bundle FILE`, or import with --bundles DIR\n",
			o->state);
	rc = EXIT_OK;
	goto out;
fail:
	fprintf(stderr, "fleetgate device import: %s\n", err);
out:
	fg_bundle_clear(&tmpl);
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- renewals plan ---- */

struct plan_ctx {
	int64_t day;            /* the day being summed (Unix seconds at 00:00 UTC) */
	double renewals, peak;  /* its renewals, its busiest hour's */
	int64_t peak_hour;
	long expiring;
	double total, max_peak; /* over the whole plan */
	int64_t max_peak_hour;
	long total_expiring;
	json_t *days;           /* --json */
};

static void plan_flush(struct plan_ctx *p)
{
	char d[32], ph[32];
	if (p->day == 0)
		return;
	fg_time_iso(p->day, d, sizeof d);
	d[10] = '\0';
	fg_time_iso(p->peak_hour, ph, sizeof ph);
	if (p->days != NULL)
		json_array_append_new(p->days, json_pack("{s:s, s:f, s:I, s:s, s:f}", "day", d, "renewals",
							 p->renewals, "expiring", (json_int_t)p->expiring,
							 "peak_hour", ph, "peak_hour_renewals", p->peak));
	else
		printf("%s %10.1f %10ld   %.5s %8.1f\n", d, p->renewals, p->expiring, ph + 11, p->peak);
}

static int plan_hour(void *arg, int64_t hour, double renewals, long expiring)
{
	struct plan_ctx *p = arg;
	int64_t day = hour - hour % 86400;
	if (day != p->day) {
		plan_flush(p);
		p->day = day;
		p->renewals = p->peak = 0;
		p->expiring = 0;
		p->peak_hour = hour;
	}
	p->renewals += renewals;
	p->expiring += expiring;
	if (renewals > p->peak) {
		p->peak = renewals;
		p->peak_hour = hour;
	}
	p->total += renewals;
	p->total_expiring += expiring;
	if (renewals > p->max_peak) {
		p->max_peak = renewals;
		p->max_peak_hour = hour;
	}
	return 0;
}

static int cmd_renewals(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	struct store *st = NULL;
	char err[1024] = "", ts[32];
	struct plan_ctx p;
	int rc;

	if (o->argc != 1 || strcmp(o->argv[0], "plan") != 0) {
		fprintf(stderr, "fleetgate: usage: fleetgate renewals plan --state DIR [--days N] [--json]\n");
		return EXIT_USAGE;
	}
	rc = open_state(o, &cfg, &st);
	if (rc != EXIT_OK)
		return rc;
	memset(&p, 0, sizeof p);
	int64_t now = fg_now(), from = now - now % 3600;
	if (o->json)
		p.days = json_array();
	else
		printf("%-10s %10s %10s   %-5s %8s\n", "day (UTC)", "renewals", "expiring", "peak", "at peak");
	if (store_renewal_load(st, from, o->days * 24, plan_hour, &p, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate renewals plan: %s\n", err);
		json_decref(p.days);
		rc = EXIT_FAIL;
		goto out;
	}
	plan_flush(&p);
	fg_time_iso(p.max_peak_hour ? p.max_peak_hour : from, ts, sizeof ts);
	if (o->json) {
		json_t *j = json_pack("{s:I, s:o, s:f, s:I, s:s, s:f, s:b, s:I}", "days_ahead", (json_int_t)o->days,
				      "days", p.days, "renewals", p.total, "expiring", (json_int_t)p.total_expiring,
				      "peak_hour", ts, "peak_hour_renewals", p.max_peak, "smoothing",
				      cfg->renewal_smoothing, "max_per_hour", (json_int_t)cfg->renewal_max_per_hour);
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(j);
	} else {
		printf("\n%.0f renewals and %ld expiries in the next %ld days; the busiest hour is %s with %.1f"
		       " renewals\n", p.total, p.total_expiring, o->days, ts, p.max_peak);
		if (cfg->renewal_max_per_hour > 0)
			printf("ceiling: %ld renewals an hour (renewal.max_per_hour)\n", cfg->renewal_max_per_hour);
	}
out:
	store_free(st);
	config_free(cfg);
	return rc;
}

/* ---- ui token ---- */

static int cmd_ui(const struct opts *o)
{
	struct gw_config *cfg = NULL;
	char err[1024] = "";
	unsigned char raw[32];
	char hex[65], token[4 + 65], hash[66];
	struct stat sb;

	if (o->argc != 1 || strcmp(o->argv[0], "token") != 0) {
		fprintf(stderr, "fleetgate: usage: fleetgate ui token --state DIR\n");
		return EXIT_USAGE;
	}
	if (need_state(o))
		return EXIT_USAGE;
	cfg = config_load(o->state, err, sizeof err);
	if (cfg == NULL) {
		fprintf(stderr, "fleetgate: %s\n", err);
		return EXIT_FAIL;
	}
	/* In a directory of its own, owned like it (a daemon that drops to
	 * its user was given the directory at start): the daemon's sandbox
	 * reads the directory, whose file this replaces. */
	char dir[PATH_MAX];
	fg_strlcpy(dir, cfg->ui_token_path, sizeof dir);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir)
		*slash = '\0';
	if (fg_mkdirs(dir, 0700, err, sizeof err) != 0 || stat(dir, &sb) != 0 || fg_random(raw, sizeof raw) != 0) {
		fprintf(stderr, "fleetgate ui token: %s: %s\n", dir, err[0] ? err : strerror(errno));
		config_free(cfg);
		return EXIT_FAIL;
	}
	snprintf(token, sizeof token, "fgu_%s", fg_hex(raw, sizeof raw, hex));
	fg_sha256_hex(token, strlen(token), hash);
	hash[64] = '\n';
	hash[65] = '\0';
	/* 0600, and only the hash: the token itself is shown once and kept
	 * nowhere. */
	if (fg_write_file_atomic(cfg->ui_token_path, hash, 65, 0600, sb.st_uid, sb.st_gid, err, sizeof err) != 0) {
		fprintf(stderr, "fleetgate ui token: %s\n", err);
		config_free(cfg);
		return EXIT_FAIL;
	}
	printf("%s\n", token);
	fprintf(stderr, "the dashboard's bearer token (shown only now; its SHA-256 is in %s; a new token "
			"replaces it at once).\nOpen /ui/#token=%s on the gateway's %s address%s.\n",
		cfg->ui_token_path, token, cfg->est_listen[0] ? "EST (https)" : "HTTP",
		cfg->ui_enabled ? "" : " once ui = { enabled = true } is in fleetgated.conf");
	explicit_bzero(raw, sizeof raw);
	explicit_bzero(token, sizeof token);
	config_free(cfg);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	struct opts o;

	fg_log_init("fleetgate", FG_LOG_WARN, FG_LOG_TEXT);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	/* COMMAND [SUB] --help: that command's help (before any other parsing,
	 * so that it works whatever else is on the line). */
	for (int i = 2; i < argc; i++)
		if ((strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) && cli_help_is_command(cmd)) {
			cli_help_print(stdout, cmd, argc > 2 && argv[2][0] != '-' ? argv[2] : NULL);
			return EXIT_OK;
		}
	if (strcmp(cmd, "commands") == 0) {
		cli_help_list(stdout);
		return EXIT_OK;
	}
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("fleetgate %s\n", FG_VERSION);
		return EXIT_OK;
	}
	if (parse_opts(argc - 1, argv + 1, &o) != 0)
		return EXIT_USAGE;
	if (strcmp(cmd, "init") == 0)
		return o.argc ? (usage(stderr), EXIT_USAGE) : cmd_init(&o);
	if (strcmp(cmd, "token") == 0 && o.argc >= 1 && strcmp(o.argv[0], "create") != 0)
		return cmd_token_ops(&o);
	if (strcmp(cmd, "token") == 0)
		return cmd_token(&o);
	if (strcmp(cmd, "device") == 0 && o.argc >= 1 && strcmp(o.argv[0], "import") == 0)
		return cmd_device_import(&o);
	if (strcmp(cmd, "device") == 0)
		return cmd_device(&o);
	if (strcmp(cmd, "cert") == 0)
		return cmd_cert(&o);
	if (strcmp(cmd, "audit") == 0)
		return cmd_audit(&o);
	if (strcmp(cmd, "backend") == 0)
		return cmd_backend(&o);
	if (strcmp(cmd, "status") == 0)
		return o.argc ? (usage(stderr), EXIT_USAGE) : cmd_status(&o);
	if (strcmp(cmd, "policy") == 0)
		return cmd_policy(&o);
	if (strcmp(cmd, "renewals") == 0)
		return cmd_renewals(&o);
	if (strcmp(cmd, "ui") == 0)
		return cmd_ui(&o);
	static const char *const cmds[] = { "init", "token", "device", "cert", "backend", "audit", "status",
					    "policy", "renewals", "ui", "commands", "version", "help" };
	const char *best = cli_help_closest(cmd, cmds, sizeof cmds / sizeof cmds[0]);
	if (best != NULL)
		fprintf(stderr, "fleetgate: unknown command '%s'; did you mean '%s'? (run `fleetgate help`)\n", cmd,
			best);
	else
		fprintf(stderr, "fleetgate: unknown command '%s'; run `fleetgate help`\n", cmd);
	return EXIT_USAGE;
}
