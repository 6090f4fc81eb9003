/*
 * agent_config.c: parse the agent config file (see agent_config.h and
 * fleetgate-agent.conf.example).
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_config.h"
#include "fg_landlock.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_x509.h"

/* Keys, so that a key given twice in one section is caught. */
static const char *const global_keys[] = {
	"bundle", "state_dir", "checkin_interval", "request_timeout", "log_level",
	"acme_http01_listen", "acme_webroot", "sandbox", NULL
};
static const char *const slot_keys[] = {
	"key_type", "key", "cert", "chain", "mode", "owner", "reload", "renew_at", NULL
};

static int key_index(const char *const *keys, const char *k)
{
	for (int i = 0; keys[i]; i++)
		if (strcmp(keys[i], k) == 0)
			return i;
	return -1;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return 0;
	return 1;
}

/* A user or group given as a number: 1 and *id set, else 0. */
static int numeric_id(const char *s, long *id)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return 0;
	errno = 0;
	*id = strtol(s, &end, 10);
	return *end == '\0' && errno == 0 && *id >= 0 && *id < 0x7fffffff;
}

/* "user", "user:group" or ":group" (names or numbers) into ids; a user
 * given alone brings its primary group. 0, or -1 naming what is unknown. */
static int parse_owner(const char *v, uid_t *uid, gid_t *gid, char *what, size_t whatlen)
{
	char buf[256], *colon;
	long n;

	if (fg_strlcpy(buf, v, sizeof buf) >= sizeof buf) {
		fg_seterr(what, whatlen, "too long");
		return -1;
	}
	colon = strchr(buf, ':');
	if (colon)
		*colon++ = '\0';
	if (buf[0]) {
		if (numeric_id(buf, &n)) {
			*uid = (uid_t)n;
		} else {
			struct passwd *pw = getpwnam(buf);
			if (pw == NULL) {
				fg_seterr(what, whatlen, "no user '%s' on this host", buf);
				return -1;
			}
			*uid = pw->pw_uid;
			if (!colon)
				*gid = pw->pw_gid;
		}
	}
	if (colon && *colon) {
		if (numeric_id(colon, &n)) {
			*gid = (gid_t)n;
		} else {
			struct group *gr = getgrnam(colon);
			if (gr == NULL) {
				fg_seterr(what, whatlen, "no group '%s' on this host", colon);
				return -1;
			}
			*gid = gr->gr_gid;
		}
	}
	if (buf[0] == '\0' && (colon == NULL || *colon == '\0')) {
		fg_seterr(what, whatlen, "expected user, user:group or :group");
		return -1;
	}
	return 0;
}

/* Start a new [slot NAME] with the defaults. NULL (with err) on a bad or
 * repeated name or too many slots. */
static struct agent_slot *slot_add(struct agent_config *cfg, const char *name, int line,
				   char *err, size_t errlen)
{
	if (!name_ok(name)) {
		fg_seterr(err, errlen, "%s:%d: slot name '%s' is invalid: use 1 to 63 of A-Z a-z 0-9 . _ -",
			  cfg->path, line, name);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nslots; i++)
		if (strcmp(cfg->slots[i].name, name) == 0) {
			fg_seterr(err, errlen, "%s:%d: slot '%s' is defined twice (first at line %d)",
				  cfg->path, line, name, cfg->slots[i].line);
			return NULL;
		}
	if (cfg->nslots >= AGENT_MAX_SLOTS) {
		fg_seterr(err, errlen, "%s:%d: too many slots (at most %d)", cfg->path, line, AGENT_MAX_SLOTS);
		return NULL;
	}
	struct agent_slot *ns = realloc(cfg->slots, (cfg->nslots + 1) * sizeof *ns);
	if (ns == NULL) {
		fg_seterr(err, errlen, "out of memory reading %s", cfg->path);
		return NULL;
	}
	cfg->slots = ns;
	struct agent_slot *s = &cfg->slots[cfg->nslots++];
	memset(s, 0, sizeof *s);
	fg_strlcpy(s->name, name, sizeof s->name);
	s->key_type = FG_KEY_P256;
	s->mode = 0600;
	s->uid = (uid_t)-1;
	s->gid = (gid_t)-1;
	s->renew_at = 2.0 / 3.0;
	s->line = line;
	return s;
}

/* See agent_config.h. */
int agent_listen_split(const char *listen, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(listen, ':');
	const char *h = listen;
	size_t hl;
	char *end;

	if (colon == NULL || colon == listen)
		return -1;
	hl = (size_t)(colon - listen);
	if (h[0] == '[') {
		if (hl < 3 || listen[hl - 1] != ']')
			return -1;
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	long p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return 0;
}

/* One "key = value" outside any section. */
static int set_global(struct agent_config *cfg, const char *base, int line, const char *k,
		      const char *v, char *err, size_t errlen)
{
	if (strcmp(k, "bundle") == 0 || strcmp(k, "state_dir") == 0) {
		char *dst = k[0] == 'b' ? cfg->bundle : cfg->state_dir;
		if (fg_path_join(base, v, dst, PATH_MAX) != 0) {
			fg_seterr(err, errlen, "%s:%d: %s path is too long", cfg->path, line, k);
			return -1;
		}
	} else if (strcmp(k, "checkin_interval") == 0 || strcmp(k, "request_timeout") == 0) {
		int64_t d = fg_parse_duration(v);
		if (d <= 0 || d > 30 * 86400) {
			fg_seterr(err, errlen, "%s:%d: %s '%s' is not a duration between 1s and 30d (e.g. 30s, 10m, 1h)",
				  cfg->path, line, k, v);
			return -1;
		}
		if (k[0] == 'c')
			cfg->checkin_interval = d;
		else
			cfg->request_timeout = d;
	} else if (strcmp(k, "log_level") == 0) {
		if (fg_log_level_parse(v) < 0) {
			fg_seterr(err, errlen, "%s:%d: log_level '%s' is unknown; use error, warn, info or debug",
				  cfg->path, line, v);
			return -1;
		}
		fg_strlcpy(cfg->log_level, v, sizeof cfg->log_level);
	} else if (strcmp(k, "acme_http01_listen") == 0) {
		char host[256];
		int port = 0;
		size_t n = strlen(v);
		if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
			v++;
			n -= 2;
		}
		if (n >= sizeof cfg->acme_http01_listen) {
			fg_seterr(err, errlen, "%s:%d: acme_http01_listen is too long", cfg->path, line);
			return -1;
		}
		memcpy(cfg->acme_http01_listen, v, n);
		cfg->acme_http01_listen[n] = '\0';
		if (agent_listen_split(cfg->acme_http01_listen, host, sizeof host, &port) != 0) {
			fg_seterr(err, errlen, "%s:%d: acme_http01_listen '%s' is not HOST:PORT (e.g. 0.0.0.0:80, [::]:80, 127.0.0.2:5002)",
				  cfg->path, line, cfg->acme_http01_listen);
			cfg->acme_http01_listen[0] = '\0';
			return -1;
		}
	} else if (strcmp(k, "acme_webroot") == 0) {
		if (v[0] == '\0') {
			fg_seterr(err, errlen, "%s:%d: acme_webroot needs a directory", cfg->path, line);
			return -1;
		}
		if (fg_path_join(base, v, cfg->acme_webroot, PATH_MAX) != 0) {
			fg_seterr(err, errlen, "%s:%d: acme_webroot path is too long", cfg->path, line);
			return -1;
		}
	} else if (strcmp(k, "sandbox") == 0) {
		int m = fg_sandbox_mode_parse(v);
		if (m < 0) {
			fg_seterr(err, errlen, "%s:%d: sandbox '%s' is unknown; use required, best-effort or off",
				  cfg->path, line, v);
			return -1;
		}
		cfg->sandbox = m;
	} else {
		fg_seterr(err, errlen, "%s:%d: unknown key '%s' (expected bundle, state_dir, checkin_interval, request_timeout, log_level, acme_http01_listen, acme_webroot, sandbox, or a [slot NAME] section)",
			  cfg->path, line, k);
		return -1;
	}
	return 0;
}

/* One "key = value" inside [slot NAME]. */
static int set_slot(struct agent_config *cfg, struct agent_slot *s, const char *base, int line,
		    const char *k, const char *v, char *err, size_t errlen)
{
	char what[256];

	if (strcmp(k, "key_type") == 0) {
		int t = fg_key_type_parse(v);
		if (t < 0) {
			fg_seterr(err, errlen, "%s:%d: key_type '%s' is unknown; use p256, p384, rsa2048, rsa3072, rsa4096 or ed25519",
				  cfg->path, line, v);
			return -1;
		}
		s->key_type = t;
	} else if (strcmp(k, "key") == 0 || strcmp(k, "cert") == 0 || strcmp(k, "chain") == 0) {
		char *dst = k[0] == 'k' ? s->key : k[1] == 'e' ? s->cert : s->chain;
		if (fg_path_join(base, v, dst, PATH_MAX) != 0) {
			fg_seterr(err, errlen, "%s:%d: %s path is too long", cfg->path, line, k);
			return -1;
		}
	} else if (strcmp(k, "mode") == 0) {
		char *end;
		long m = strtol(v, &end, 8);
		if (*end || m < 0 || m > 0777 || (m & 0037) || !(m & 0400)) {
			fg_seterr(err, errlen, "%s:%d: mode '%s' must be octal, readable by the owner and at most 0640 (a private key is never world-readable)",
				  cfg->path, line, v);
			return -1;
		}
		s->mode = (mode_t)m;
	} else if (strcmp(k, "owner") == 0) {
		if (parse_owner(v, &s->uid, &s->gid, what, sizeof what) != 0) {
			fg_seterr(err, errlen, "%s:%d: owner '%s': %s", cfg->path, line, v, what);
			return -1;
		}
	} else if (strcmp(k, "reload") == 0) {
		if (fg_strlcpy(s->reload, v, sizeof s->reload) >= sizeof s->reload) {
			fg_seterr(err, errlen, "%s:%d: reload command is longer than %zu bytes; put it in a script",
				  cfg->path, line, sizeof s->reload - 1);
			return -1;
		}
	} else if (strcmp(k, "renew_at") == 0) {
		char *end;
		double f = strtod(v, &end);
		if (*end || !(f >= 0.1 && f <= 0.95)) {
			fg_seterr(err, errlen, "%s:%d: renew_at '%s' must be a fraction of the lifetime between 0.1 and 0.95",
				  cfg->path, line, v);
			return -1;
		}
		s->renew_at = f;
	} else {
		fg_seterr(err, errlen, "%s:%d: unknown key '%s' in [slot %s] (expected key_type, key, cert, chain, mode, owner, reload, renew_at)",
			  cfg->path, line, k, s->name);
		return -1;
	}
	return 0;
}

/* Checks that need the whole file: required keys, and no two slots (or two
 * files of one slot) writing the same path. */
static int check_all(struct agent_config *cfg, char *err, size_t errlen)
{
	if (cfg->bundle[0] == '\0' || cfg->state_dir[0] == '\0') {
		fg_seterr(err, errlen, "%s: 'bundle' and 'state_dir' are required", cfg->path);
		return -1;
	}
	if (cfg->nslots == 0) {
		fg_seterr(err, errlen, "%s: no [slot NAME] section; define at least one certificate slot", cfg->path);
		return -1;
	}
	for (size_t i = 0; i < cfg->nslots; i++) {
		const struct agent_slot *s = &cfg->slots[i];
		if (s->key[0] == '\0' || s->cert[0] == '\0') {
			fg_seterr(err, errlen, "%s:%d: [slot %s] needs 'key' and 'cert' paths", cfg->path, s->line,
				  s->name);
			return -1;
		}
		const char *mine[3] = { s->key, s->cert, s->chain };
		for (int a = 0; a < 3; a++)
			for (int b = a + 1; b < 3; b++)
				if (mine[a][0] && strcmp(mine[a], mine[b]) == 0) {
					fg_seterr(err, errlen, "%s:%d: [slot %s] key, cert and chain must be different files",
						  cfg->path, s->line, s->name);
					return -1;
				}
		for (size_t j = 0; j < i; j++) {
			const struct agent_slot *o = &cfg->slots[j];
			const char *theirs[3] = { o->key, o->cert, o->chain };
			for (int a = 0; a < 3; a++)
				for (int b = 0; b < 3; b++)
					if (mine[a][0] && strcmp(mine[a], theirs[b]) == 0) {
						fg_seterr(err, errlen, "%s:%d: slots '%s' and '%s' share a key or certificate path (%s)",
							  cfg->path, s->line, o->name, s->name, mine[a]);
						return -1;
					}
		}
	}
	return 0;
}

/*
 * Read the file line by line. A '#' starts a comment, except inside a
 * reload command, which goes to /bin/sh as written (where " #" starts a
 * comment anyway, and "a#b" is a word). Duplicate keys within a section are
 * errors: silently taking the last one hides typos.
 */
int agent_config_load(const char *path, struct agent_config *cfg, char *err, size_t errlen)
{
	char *text = NULL, base[PATH_MAX], tmp[PATH_MAX];
	struct agent_slot *cur = NULL;
	unsigned seen = 0;
	int lineno = 0, rc = -1;

	char local[512];
	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof local;
	}
	memset(cfg, 0, sizeof *cfg);
	fg_strlcpy(cfg->path, path, sizeof cfg->path);
	cfg->checkin_interval = 3600;
	cfg->request_timeout = 10;
	cfg->sandbox = FG_SANDBOX_REQUIRED;
	fg_strlcpy(cfg->log_level, "info", sizeof cfg->log_level);
	fg_strlcpy(tmp, path, sizeof tmp);
	/* absolute, so that later reads do not depend on the working directory */
	if (realpath(dirname(tmp), base) == NULL) {
		fg_strlcpy(tmp, path, sizeof tmp);
		fg_strlcpy(base, dirname(tmp), sizeof base);
	}
	if (fg_read_file(path, 256 * 1024, &text, NULL, err, errlen) != 0) {
		char tmp2[600];
		snprintf(tmp2, sizeof tmp2, "agent configuration: %s", err);
		fg_strlcpy(err, tmp2, errlen);
		goto out;
	}

	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		char *l = trim(line);
		char *eqp = strchr(l, '=');
		int is_reload = 0;
		if (eqp) {
			char kbuf[16];
			size_t kl = (size_t)(eqp - l);
			if (kl < sizeof kbuf) {
				memcpy(kbuf, l, kl);
				kbuf[kl] = '\0';
				is_reload = strcmp(trim(kbuf), "reload") == 0;
			}
		}
		char *hash = strchr(l, '#');
		if (hash && (!is_reload || hash < eqp))
			*hash = '\0';
		l = trim(l);
		if (*l == '\0')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (close == NULL || close[1] != '\0' || strncmp(l, "[slot", 5) != 0 ||
			    !isspace((unsigned char)l[5])) {
				fg_seterr(err, errlen, "%s:%d: expected a section like [slot NAME]", path, lineno);
				goto out;
			}
			*close = '\0';
			if ((cur = slot_add(cfg, trim(l + 5), lineno, err, errlen)) == NULL)
				goto out;
			seen = 0;
			continue;
		}
		char *eq = strchr(l, '=');
		if (eq == NULL) {
			fg_seterr(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
			goto out;
		}
		*eq = '\0';
		char *k = trim(l), *v = trim(eq + 1);
		if (*v == '\0') {
			fg_seterr(err, errlen, "%s:%d: '%s' has no value", path, lineno, k);
			goto out;
		}
		int idx = key_index(cur ? slot_keys : global_keys, k);
		if (idx >= 0 && (seen & (1u << idx))) {
			if (cur)
				fg_seterr(err, errlen, "%s:%d: '%s' is set twice in [slot %s]", path, lineno, k, cur->name);
			else
				fg_seterr(err, errlen, "%s:%d: '%s' is set twice", path, lineno, k);
			goto out;
		}
		if (idx >= 0)
			seen |= 1u << idx;
		if (cur == NULL ? set_global(cfg, base, lineno, k, v, err, errlen)
				: set_slot(cfg, cur, base, lineno, k, v, err, errlen))
			goto out;
	}
	if (check_all(cfg, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	free(text);
	if (rc != 0) {
		free(cfg->slots);
		cfg->slots = NULL;
		cfg->nslots = 0;
	}
	return rc;
}

void agent_config_clear(struct agent_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->slots);
	memset(cfg, 0, sizeof *cfg);
}

const struct agent_slot *agent_config_slot(const struct agent_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nslots; i++)
		if (strcmp(cfg->slots[i].name, name) == 0)
			return &cfg->slots[i];
	return NULL;
}
