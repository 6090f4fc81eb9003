/*
 * Unit tests for gateway/config.c: the text `fleetgate init` writes loads
 * with the documented values; typos, bad values and dangling references
 * are refused with a message naming the setting; paths are made absolute;
 * the file runs with no libraries and under the instruction and memory caps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"

struct fixture {
	char dir[64];
	char real[PATH_MAX];     /* realpath of dir */
	char conf[160];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fg-test-config.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_non_null(realpath(f->dir, f->real));
	snprintf(f->conf, sizeof f->conf, "%s/fleetgated.conf", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	unlink(f->conf);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void write_conf(struct fixture *f, const char *text)
{
	FILE *fp = fopen(f->conf, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* A small valid config, with room for one extra line at the end. */
static void write_min(struct fixture *f, const char *extra)
{
	char text[2048];
	snprintf(text, sizeof text,
		 "backends = { [\"local\"] = { plugin = \"local\", ca_dir = \"ca\" } }\n"
		 "profiles = { default = { backend = \"local\" } }\n"
		 "%s\n", extra);
	write_conf(f, text);
}

static struct gw_config *must_load(struct fixture *f)
{
	char err[512] = "";
	struct gw_config *cfg = config_load(f->dir, err, sizeof err);
	if (cfg == NULL)
		fail_msg("config_load: %s", err);
	return cfg;
}

/* config_load must fail and err must contain want. */
static void expect_error(struct fixture *f, const char *text, const char *want)
{
	char err[512] = "";
	struct gw_config *cfg;

	write_conf(f, text);
	cfg = config_load(f->dir, err, sizeof err);
	if (cfg != NULL) {
		config_free(cfg);
		fail_msg("config accepted:\n%s", text);
	}
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' lacks '%s'", err, want);
	if (strncmp(err, "fleetgated.conf", 15) != 0 && strstr(err, "fleetgated.conf") == NULL)
		fail_msg("error '%s' does not name the file", err);
}

static void expect_min_error(struct fixture *f, const char *extra, const char *want)
{
	char text[2048];
	snprintf(text, sizeof text,
		 "backends = { [\"local\"] = { plugin = \"local\", ca_dir = \"ca\" } }\n"
		 "profiles = { default = { backend = \"local\" } }\n"
		 "%s\n", extra);
	expect_error(f, text, want);
}

static void test_default_text_loads(void **state)
{
	struct fixture *f = *state;
	char *text = config_default_text("tcp://127.0.0.1:7811");
	char want[PATH_MAX + 64];
	struct gw_config *cfg;
	const struct config_profile *p;
	const struct config_backend *b;

	assert_non_null(text);
	assert_non_null(strstr(text, "listen = \"tcp://127.0.0.1:7811\""));
	write_conf(f, text);
	free(text);
	cfg = must_load(f);

	assert_string_equal(cfg->state_dir, f->real);
	assert_string_equal(cfg->listen, "tcp://127.0.0.1:7811");
	assert_int_equal(cfg->workers, 16);
	assert_string_equal(cfg->store_engine, "sqlite");
	snprintf(want, sizeof want, "%s/fleetgate.db", f->real);
	assert_string_equal(cfg->store_path, want);
	snprintf(want, sizeof want, "%s/policy.lua", f->real);
	assert_string_equal(cfg->policy_path, want);
	snprintf(want, sizeof want, "%s/keys/gateway.key", f->real);
	assert_string_equal(cfg->curve_key_path, want);
	assert_string_equal(cfg->plugin_dir, "");
	assert_string_equal(cfg->log_level, "info");
	assert_int_equal(cfg->checkin_interval, 3600);
	assert_int_equal(cfg->max_message, 65536);
	assert_int_equal(cfg->policy_memory, 4 * 1024 * 1024);
	assert_int_equal(cfg->policy_instructions, 1000000);

	assert_int_equal(cfg->nbackends, 1);
	b = config_backend(cfg, "local");
	assert_non_null(b);
	assert_string_equal(b->plugin, "local");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "name"), "local");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "state_dir"), f->real);
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "ca_dir"), "ca");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "key_type"), "p256");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "ca_validity"), "10y");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "ca_name"), "fleetgate local CA");
	assert_null(fg_kv_get(b->settings, b->nsettings, "plugin"));
	assert_null(config_backend(cfg, "acme"));

	assert_int_equal(cfg->nprofiles, 2);
	p = config_profile(cfg, "default");
	assert_non_null(p);
	assert_string_equal(p->backend, "local");
	assert_int_equal(p->key_usage, FG_KU_DIGITAL_SIGNATURE);
	assert_int_equal(p->neku, 1);
	assert_string_equal(p->eku[0], "clientAuth");
	assert_int_equal(p->max_validity, 90 * 86400);
	assert_int_equal(p->default_validity, 30 * 86400);
	assert_int_equal(p->names, NAME_CN | NAME_DNS);

	p = config_profile(cfg, "server");
	assert_non_null(p);
	assert_int_equal(p->key_usage, FG_KU_DIGITAL_SIGNATURE | FG_KU_KEY_ENCIPHERMENT);
	assert_int_equal(p->neku, 2);
	assert_string_equal(p->eku[0], "serverAuth");
	assert_string_equal(p->eku[1], "clientAuth");
	assert_int_equal(p->max_validity, 397 * 86400);
	assert_int_equal(p->default_validity, 90 * 86400);
	assert_int_equal(p->names, NAME_CN | NAME_DNS | NAME_IP);
	assert_null(config_profile(cfg, "nope"));
	config_free(cfg);
	config_free(NULL);
}

/* A listen value with quotes and backslashes still round-trips. */
static void test_default_text_quoting(void **state)
{
	struct fixture *f = *state;
	char *text = config_default_text("ipc:///tmp/a \"b\"\\c");
	struct gw_config *cfg;

	assert_non_null(text);
	write_conf(f, text);
	free(text);
	cfg = must_load(f);
	assert_string_equal(cfg->listen, "ipc:///tmp/a \"b\"\\c");
	config_free(cfg);
}

static void test_minimal_defaults(void **state)
{
	struct fixture *f = *state;
	struct gw_config *cfg;
	const struct config_profile *p;

	write_min(f, "");
	cfg = must_load(f);
	assert_string_equal(cfg->listen, "tcp://127.0.0.1:7700");
	assert_int_equal(cfg->workers, 16);
	assert_int_equal(cfg->checkin_interval, 3600);
	p = config_profile(cfg, "default");
	assert_non_null(p);
	assert_int_equal(p->key_usage, FG_KU_DIGITAL_SIGNATURE);
	assert_int_equal(p->neku, 0);
	assert_int_equal(p->max_validity, 90 * 86400);
	assert_int_equal(p->default_validity, 30 * 86400);
	assert_int_equal(p->names, NAME_CN | NAME_DNS);
	config_free(cfg);
}

static void test_values(void **state)
{
	struct fixture *f = *state;
	struct gw_config *cfg;
	const struct config_backend *b;
	const struct config_profile *p;

	write_conf(f,
		   "local days = 86400\n"
		   "workers = 8\n"
		   "log_level = 'debug'\n"
		   "checkin_interval = '15m'\n"
		   "limits = { max_message = '128K', policy_memory = '8M', policy_instructions = 5000 }\n"
		   "backends = {\n"
		   "  ca1 = { plugin = 'local', ca_dir = '/srv/ca', serial_bits = 64, strict = true,\n"
		   "          ratio = 0.5, legacy = false },\n"
		   "  acme = { plugin = 'acme', directory = 'https://acme.example/dir' },\n"
		   "}\n"
		   "profiles = {\n"
		   "  default = { backend = 'ca1', key_usage = { 'contentCommitment', 'keyAgreement' },\n"
		   "              extended_key_usage = { '1.3.6.1.5.5.7.3.2', 'OCSPSigning' },\n"
		   "              max_validity = 7 * days, names = { 'email', 'ip' } },\n"
		   "  web = { backend = 'acme', max_validity = '12h', default_validity = 3600 },\n"
		   "}\n");
	cfg = must_load(f);
	assert_int_equal(cfg->workers, 8);
	assert_string_equal(cfg->log_level, "debug");
	assert_int_equal(cfg->checkin_interval, 900);
	assert_int_equal(cfg->max_message, 128 * 1024);
	assert_int_equal(cfg->policy_memory, 8 * 1024 * 1024);
	assert_int_equal(cfg->policy_instructions, 5000);

	assert_int_equal(cfg->nbackends, 2);
	assert_string_equal(cfg->backends[0].name, "acme");      /* sorted by name */
	b = config_backend(cfg, "ca1");
	assert_non_null(b);
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "serial_bits"), "64");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "strict"), "yes");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "legacy"), "no");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "ratio"), "0.5");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "ca_dir"), "/srv/ca");
	assert_string_equal(fg_kv_get(b->settings, b->nsettings, "name"), "ca1");
	assert_int_equal(b->nsettings, 7);

	p = config_profile(cfg, "default");
	assert_non_null(p);
	assert_int_equal(p->key_usage, FG_KU_NON_REPUDIATION | FG_KU_KEY_AGREEMENT);
	assert_int_equal(p->neku, 2);
	assert_string_equal(p->eku[0], "1.3.6.1.5.5.7.3.2");
	assert_int_equal(p->max_validity, 7 * 86400);
	assert_int_equal(p->default_validity, 7 * 86400);   /* min(30 d, max) */
	assert_int_equal(p->names, NAME_EMAIL | NAME_IP);
	p = config_profile(cfg, "web");
	assert_non_null(p);
	assert_string_equal(p->backend, "acme");
	assert_int_equal(p->max_validity, 12 * 3600);
	assert_int_equal(p->default_validity, 3600);
	config_free(cfg);
}

static void test_paths(void **state)
{
	struct fixture *f = *state;
	struct gw_config *cfg;
	char want[PATH_MAX + 64], cwd[PATH_MAX], *slash, rel[PATH_MAX];

	write_min(f, "policy = 'policies/main.lua'\n"
		     "store = { path = 'db/fleet.db' }\n"
		     "curve_key = '/etc/fleetgate/gateway.key'\n"
		     "plugin_dir = 'plugins'\n");
	/* a relative state directory is made absolute */
	assert_non_null(getcwd(cwd, sizeof cwd));
	slash = strrchr(f->dir, '/');
	assert_int_equal(chdir("/tmp"), 0);
	snprintf(rel, sizeof rel, "./%s", slash + 1);
	{
		char err[512] = "";
		cfg = config_load(rel, err, sizeof err);
		assert_int_equal(chdir(cwd), 0);
		if (cfg == NULL)
			fail_msg("%s", err);
	}
	assert_string_equal(cfg->state_dir, f->real);
	snprintf(want, sizeof want, "%s/policies/main.lua", f->real);
	assert_string_equal(cfg->policy_path, want);
	snprintf(want, sizeof want, "%s/db/fleet.db", f->real);
	assert_string_equal(cfg->store_path, want);
	assert_string_equal(cfg->curve_key_path, "/etc/fleetgate/gateway.key");
	snprintf(want, sizeof want, "%s/plugins", f->real);
	assert_string_equal(cfg->plugin_dir, want);
	config_free(cfg);
}

static void test_unknown_keys(void **state)
{
	struct fixture *f = *state;

	expect_min_error(f, "lisen = 'tcp://127.0.0.1:7700'", "fleetgated.conf: unknown setting 'lisen'");
	expect_min_error(f, "days = 86400", "use 'local' for helper variables");
	expect_min_error(f, "limits = { max_msg = 1 }", "limits: unknown field 'max_msg'");
	expect_min_error(f, "store = { engine = 'sqlite', pth = 'x' }", "store: unknown field 'pth'");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { backend = 'l', max_valdity = '1d' } }\n",
		     "profiles.default: unknown field 'max_valdity'");
}

static void test_bad_values(void **state)
{
	struct fixture *f = *state;

	expect_min_error(f, "workers = 0", "workers is 0; it must be between 1 and 64");
	expect_min_error(f, "workers = 65", "between 1 and 64");
	expect_min_error(f, "workers = '2'", "workers must be a whole number");
	expect_min_error(f, "workers = 1.5", "workers must be a whole number");
	expect_min_error(f, "listen = 7700", "listen must be a string");
	expect_min_error(f, "listen = 'localhost:7700'", "not a ZeroMQ endpoint");
	expect_min_error(f, "log_level = 'loud'", "log_level: 'loud' is not a level");
	expect_min_error(f, "checkin_interval = '1 hour'", "checkin_interval: '1 hour' is not a duration");
	expect_min_error(f, "checkin_interval = -5", "not a duration");
	expect_min_error(f, "limits = { max_message = 100 }", "limits.max_message is 100 bytes");
	expect_min_error(f, "limits = { max_message = '32M' }", "between 1024 and 16777216");
	expect_min_error(f, "limits = { policy_memory = 'lots' }", "limits.policy_memory is not a size");
	expect_min_error(f, "store = { engine = 'oracle' }", "store.engine: 'oracle' is not supported");
	expect_min_error(f, "store = 'x.db'", "store must be a table");
}

static void test_profiles_and_backends(void **state)
{
	struct fixture *f = *state;

	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { backend = 'l', max_validity = '9x' } }\n",
		     "profiles.default.max_validity: '9x' is not a duration");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { backend = 'nope' } }\n",
		     "profiles.default.backend: no backend named 'nope' is defined (defined: l)");
	expect_error(f,
		     "backends = { a = { plugin = 'local' }, b = { plugin = 'local' } }\n"
		     "profiles = { default = {} }\n",
		     "profiles.default: set backend");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { server = { backend = 'l' } }\n",
		     "no profile named 'default'");
	expect_error(f, "profiles = { default = {} }\n", "no backends are defined");
	expect_error(f, "backends = {}\nprofiles = { default = {} }\n", "backends is empty");
	expect_error(f,
		     "backends = { l = { ca_dir = 'ca' } }\n"
		     "profiles = { default = {} }\n",
		     "backends.l: set plugin");
	expect_error(f,
		     "backends = { l = { plugin = 'local', state_dir = '/' } }\n"
		     "profiles = { default = {} }\n",
		     "backends.l.state_dir is set by the gateway");
	expect_error(f,
		     "backends = { l = { plugin = 'local', hosts = { 'a' } } }\n"
		     "profiles = { default = {} }\n",
		     "backends.l.hosts must be a string, number or boolean");
	expect_error(f,
		     "backends = { ['bad name'] = { plugin = 'local' } }\n"
		     "profiles = { default = {} }\n",
		     "backends: entry names must be");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { default_validity = '60d', max_validity = '30d' } }\n",
		     "default_validity (5184000 s) is longer than max_validity (2592000 s)");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { key_usage = { 'digitalsignature' } } }\n",
		     "unknown key usage 'digitalsignature'; valid names are digitalSignature, nonRepudiation");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { key_usage = 'digitalSignature' } }\n",
		     "profiles.default.key_usage must be a list of names");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { extended_key_usage = { 'clientauth' } } }\n",
		     "unknown extended key usage 'clientauth'; valid names are clientAuth, serverAuth");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { extended_key_usage = { '1..2' } } }\n",
		     "unknown extended key usage '1..2'");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { extended_key_usage = { '7.1' } } }\n",
		     "unknown extended key usage '7.1'");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { names = { 'cn', 'uri' } } }\n",
		     "unknown name type 'uri'; valid types are cn, dns, ip, email");
	expect_error(f,
		     "backends = { l = { plugin = 'local' } }\n"
		     "profiles = { default = { names = {} } }\n",
		     "at least one name type");
}

/* The file is data: no libraries, and the caps stop a runaway file. */
static void test_sandbox(void **state)
{
	struct fixture *f = *state;

	expect_min_error(f, "while true do end", "instruction limit (100000)");
	expect_min_error(f, "local s = 'x' for i = 1, 40 do s = s .. s end", "memory limit (1048576 bytes)");
	expect_min_error(f, "os.exit(1)", "global 'os'");
	expect_min_error(f, "io.open('/etc/passwd')", "global 'io'");
	expect_min_error(f, "require('os')", "global 'require'");
	expect_min_error(f, "print('hi')", "global 'print'");
	expect_min_error(f, "local s = ('x'):rep(3)", "attempt to index a string value");
	expect_min_error(f, "workers = = 2", "fleetgated.conf:3:");
	expect_min_error(f, "error('stop here')", "fleetgated.conf:3: attempt to call a nil value (global 'error')");
	expect_min_error(f, "local x; workers = x.count", "fleetgated.conf:3: attempt to index a nil value");
}

static void test_missing(void **state)
{
	struct fixture *f = *state;
	char err[512] = "", path[160];

	assert_null(config_load(f->dir, err, sizeof err));
	assert_non_null(strstr(err, "fleetgate init"));
	snprintf(path, sizeof path, "%s/absent", f->dir);
	assert_null(config_load(path, err, sizeof err));
	assert_non_null(strstr(err, "absent"));
}

/* http = { listen = ... }: parsed, checked, off by default; the text init
 * appends (enabled or commented) loads and sets the local CA's URLs. */
static void test_http(void **state)
{
	struct fixture *f = *state;
	char host[64], text[4096];
	int port;
	struct gw_config *cfg;

	write_min(f, "");
	cfg = must_load(f);
	assert_string_equal(cfg->http_listen, "");
	config_free(cfg);
	write_min(f, "http = { listen = \"127.0.0.1:7780\" }");
	cfg = must_load(f);
	assert_string_equal(cfg->http_listen, "127.0.0.1:7780");
	config_free(cfg);

	assert_int_equal(config_http_split("[::1]:80", host, sizeof host, &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 80);
	assert_int_equal(config_http_split("*:7780", host, sizeof host, &port), 0);
	assert_string_equal(host, "0.0.0.0");
	assert_int_equal(config_http_split("::1:80", host, sizeof host, &port), -1);
	assert_int_equal(config_http_split("host:0", host, sizeof host, &port), -1);
	assert_int_equal(config_http_split("host:70000", host, sizeof host, &port), -1);
	assert_int_equal(config_http_split(":80", host, sizeof host, &port), -1);

	expect_error(f, "backends = { [\"local\"] = { plugin = \"local\" } }\n"
		     "profiles = { default = {} }\nhttp = { listen = \"localhost\" }\n",
		     "http.listen: 'localhost' is not HOST:PORT");
	expect_error(f, "backends = { [\"local\"] = { plugin = \"local\" } }\n"
		     "profiles = { default = {} }\nhttp = { port = 80 }\n",
		     "http: unknown field 'port'");
	expect_error(f, "backends = { [\"local\"] = { plugin = \"local\" } }\n"
		     "profiles = { default = {} }\nhttp = \"127.0.0.1:80\"\n",
		     "http must be a table");

	for (int on = 0; on < 2; on++) {
		char *base = config_default_text("tcp://127.0.0.1:7700");
		char *http = config_http_text(on ? "*:7781" : NULL);
		assert_non_null(base);
		assert_non_null(http);
		snprintf(text, sizeof text, "%s%s", base, http);
		free(base);
		free(http);
		write_conf(f, text);
		cfg = must_load(f);
		const struct config_backend *b = config_backend(cfg, "local");
		assert_non_null(b);
		assert_string_equal(cfg->http_listen, on ? "*:7781" : "");
		const char *crl = fg_kv_get(b->settings, b->nsettings, "crl_url");
		const char *ocsp = fg_kv_get(b->settings, b->nsettings, "ocsp_url");
		if (on) {
			assert_string_equal(crl, "http://127.0.0.1:7781/crl/local.crl");
			assert_string_equal(ocsp, "http://127.0.0.1:7781/ocsp");
		} else {
			assert_null(crl);
			assert_null(ocsp);
		}
		config_free(cfg);
	}
	assert_null(config_http_text("nonsense"));
}

/* est = { listen, cert, key, labels }: parsed, paths resolved, labels
 * checked against the profiles; the text init appends loads. */
static void test_est(void **state)
{
	struct fixture *f = *state;
	struct gw_config *cfg;
	const char *head = "backends = { [\"local\"] = { plugin = \"local\" } }\n"
			   "profiles = { default = {}, vpn = {} }\n";
	char text[4096];

	write_min(f, "");
	cfg = must_load(f);
	assert_string_equal(cfg->est_listen, "");
	assert_int_equal(cfg->nest_labels, 0);
	config_free(cfg);

	snprintf(text, sizeof text, "%sest = { listen = \"127.0.0.1:8443\", cert = \"est/s.crt\", "
		 "key = \"/abs/s.key\", labels = { vpn = \"vpn\", base = \"default\" } }\n", head);
	write_conf(f, text);
	cfg = must_load(f);
	assert_string_equal(cfg->est_listen, "127.0.0.1:8443");
	assert_non_null(strstr(cfg->est_cert, "/est/s.crt"));
	assert_true(cfg->est_cert[0] == '/');
	assert_string_equal(cfg->est_key, "/abs/s.key");
	assert_int_equal(cfg->nest_labels, 2);
	assert_string_equal(cfg->est_labels[0].name, "base");     /* sorted */
	assert_string_equal(config_est_label(cfg, "vpn")->profile, "vpn");
	assert_null(config_est_label(cfg, "other"));
	config_free(cfg);

	snprintf(text, sizeof text, "%sest = { listen = \"127.0.0.1:8443\" }\n", head);
	expect_error(f, text, "est: cert and key");
	snprintf(text, sizeof text, "%sest = { listen = \"8443\", cert = \"a\", key = \"b\" }\n", head);
	expect_error(f, text, "est.listen: '8443' is not HOST:PORT");
	snprintf(text, sizeof text, "%sest = { listen = \"127.0.0.1:1\", cert = \"a\", key = \"b\", "
		 "labels = { x = \"nosuch\" } }\n", head);
	expect_error(f, text, "est.labels.x: no profile named 'nosuch'");
	snprintf(text, sizeof text, "%sest = { labels = { cacerts = \"vpn\" } }\n", head);
	expect_error(f, text, "'cacerts' is not a usable label");
	snprintf(text, sizeof text, "%sest = { labels = { [\"a/b\"] = \"vpn\" } }\n", head);
	expect_error(f, text, "'a/b' is not a usable label");
	snprintf(text, sizeof text, "%sest = { port = 1 }\n", head);
	expect_error(f, text, "est: unknown field 'port'");

	for (int on = 0; on < 2; on++) {
		char *base = config_default_text("tcp://127.0.0.1:7700");
		char *est = config_est_text(on ? "127.0.0.1:8443" : "");
		assert_non_null(base);
		assert_non_null(est);
		snprintf(text, sizeof text, "%s%s", base, est);
		free(base);
		free(est);
		write_conf(f, text);
		cfg = must_load(f);
		assert_string_equal(cfg->est_listen, on ? "127.0.0.1:8443" : "");
		config_free(cfg);
	}
	assert_null(config_est_text("nonsense"));
}

static void test_key_usage_bits(void **state)
{
	(void)state;
	assert_int_equal(config_key_usage_bit("digitalSignature"), FG_KU_DIGITAL_SIGNATURE);
	assert_int_equal(config_key_usage_bit("nonRepudiation"), FG_KU_NON_REPUDIATION);
	assert_int_equal(config_key_usage_bit("contentCommitment"), FG_KU_NON_REPUDIATION);
	assert_int_equal(config_key_usage_bit("keyEncipherment"), FG_KU_KEY_ENCIPHERMENT);
	assert_int_equal(config_key_usage_bit("dataEncipherment"), FG_KU_DATA_ENCIPHERMENT);
	assert_int_equal(config_key_usage_bit("keyAgreement"), FG_KU_KEY_AGREEMENT);
	assert_int_equal(config_key_usage_bit("keyCertSign"), 0);
	assert_int_equal(config_key_usage_bit(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_default_text_loads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_est, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_text_quoting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_minimal_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_profiles_and_backends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sandbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_usage_bits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
