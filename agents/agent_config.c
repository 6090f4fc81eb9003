/*
 * agent_config.c: parse the agent config file (see agent_config.h).
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
#include "fg_util.h"
#include "fg_x509.h"

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

/* "user:group" (names or numbers) -> ids. */
static int parse_owner(const char *v, uid_t *uid, gid_t *gid)
{
	char buf[256], *colon;
	fg_strlcpy(buf, v, sizeof buf);
	colon = strchr(buf, ':');
	if (colon)
		*colon++ = '\0';
	char *end;
	if (buf[0]) {
		long n = strtol(buf, &end, 10);
		if (*end == '\0' && n >= 0) {
			*uid = (uid_t)n;
		} else {
			struct passwd *pw = getpwnam(buf);
			if (pw == NULL)
				return -1;
			*uid = pw->pw_uid;
			if (!colon)
				*gid = pw->pw_gid;
		}
	}
	if (colon && *colon) {
		long n = strtol(colon, &end, 10);
		if (*end == '\0' && n >= 0) {
			*gid = (gid_t)n;
		} else {
			struct group *gr = getgrnam(colon);
			if (gr == NULL)
				return -1;
			*gid = gr->gr_gid;
		}
	}
	return 0;
}

static void resolve(const char *base, const char *v, char *out, size_t outlen)
{
	fg_path_join(v[0] == '/' ? NULL : base, v, out, outlen);
}

int agent_config_load(const char *path, struct agent_config *cfg, char *err, size_t errlen)
{
	char *text = NULL, base[PATH_MAX], tmp[PATH_MAX];
	struct agent_slot *cur = NULL;
	int lineno = 0, rc = -1;

	memset(cfg, 0, sizeof *cfg);
	fg_strlcpy(cfg->path, path, sizeof cfg->path);
	cfg->checkin_interval = 3600;
	cfg->request_timeout = 10;
	fg_strlcpy(cfg->log_level, "info", sizeof cfg->log_level);
	fg_strlcpy(tmp, path, sizeof tmp);
	fg_strlcpy(base, dirname(tmp), sizeof base);
	if (fg_read_file(path, 256 * 1024, &text, NULL, err, errlen) != 0)
		return -1;

	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		char *hash = strchr(line, '#');
		/* a '#' starts a comment unless it is inside a reload command */
		if (hash && (strncmp(trim(line), "reload", 6) != 0))
			*hash = '\0';
		char *l = trim(line);
		if (*l == '\0' || *l == '#')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (close == NULL || close[1] != '\0' || strncmp(l, "[slot ", 6) != 0) {
				fg_seterr(err, errlen, "%s:%d: expected a section like [slot NAME]", path, lineno);
				goto out;
			}
			*close = '\0';
			char *name = trim(l + 6);
			if (!name_ok(name)) {
				fg_seterr(err, errlen, "%s:%d: slot name '%s' is invalid: use 1-63 of A-Z a-z 0-9 . _ -",
					  path, lineno, name);
				goto out;
			}
			for (size_t i = 0; i < cfg->nslots; i++)
				if (strcmp(cfg->slots[i].name, name) == 0) {
					fg_seterr(err, errlen, "%s:%d: slot '%s' is defined twice", path, lineno, name);
					goto out;
				}
			struct agent_slot *ns = realloc(cfg->slots, (cfg->nslots + 1) * sizeof *ns);
			if (ns == NULL) {
				fg_seterr(err, errlen, "out of memory");
				goto out;
			}
			cfg->slots = ns;
			cur = &cfg->slots[cfg->nslots++];
			memset(cur, 0, sizeof *cur);
			fg_strlcpy(cur->name, name, sizeof cur->name);
			cur->key_type = FG_KEY_P256;
			cur->mode = 0600;
			cur->uid = (uid_t)-1;
			cur->gid = (gid_t)-1;
			cur->renew_at = 2.0 / 3.0;
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
		if (cur == NULL) {
			if (strcmp(k, "bundle") == 0) {
				resolve(base, v, cfg->bundle, sizeof cfg->bundle);
			} else if (strcmp(k, "state_dir") == 0) {
				resolve(base, v, cfg->state_dir, sizeof cfg->state_dir);
			} else if (strcmp(k, "checkin_interval") == 0 || strcmp(k, "request_timeout") == 0) {
				int64_t d = fg_parse_duration(v);
				if (d <= 0) {
					fg_seterr(err, errlen, "%s:%d: %s '%s' is not a duration (e.g. 30s, 10m, 1h)",
						  path, lineno, k, v);
					goto out;
				}
				if (k[0] == 'c')
					cfg->checkin_interval = d;
				else
					cfg->request_timeout = d;
			} else if (strcmp(k, "log_level") == 0) {
				fg_strlcpy(cfg->log_level, v, sizeof cfg->log_level);
			} else {
				fg_seterr(err, errlen, "%s:%d: unknown key '%s' (expected bundle, state_dir, checkin_interval, request_timeout, log_level, or a [slot NAME] section)",
					  path, lineno, k);
				goto out;
			}
			continue;
		}
		if (strcmp(k, "key_type") == 0) {
			int t = fg_key_type_parse(v);
			if (t < 0) {
				fg_seterr(err, errlen, "%s:%d: key_type '%s' is unknown; use p256, p384, rsa2048, rsa3072, rsa4096 or ed25519",
					  path, lineno, v);
				goto out;
			}
			cur->key_type = t;
		} else if (strcmp(k, "key") == 0) {
			resolve(base, v, cur->key, sizeof cur->key);
		} else if (strcmp(k, "cert") == 0) {
			resolve(base, v, cur->cert, sizeof cur->cert);
		} else if (strcmp(k, "chain") == 0) {
			resolve(base, v, cur->chain, sizeof cur->chain);
		} else if (strcmp(k, "mode") == 0) {
			char *end;
			long m = strtol(v, &end, 8);
			if (*end || m < 0 || m > 0777 || (m & 0077 & ~0040)) {
				fg_seterr(err, errlen, "%s:%d: mode '%s' must be octal, at most 0640 (a private key is never world-readable)",
					  path, lineno, v);
				goto out;
			}
			cur->mode = (mode_t)m;
		} else if (strcmp(k, "owner") == 0) {
			if (parse_owner(v, &cur->uid, &cur->gid) != 0) {
				fg_seterr(err, errlen, "%s:%d: owner '%s': no such user or group", path, lineno, v);
				goto out;
			}
		} else if (strcmp(k, "reload") == 0) {
			if (fg_strlcpy(cur->reload, v, sizeof cur->reload) >= sizeof cur->reload) {
				fg_seterr(err, errlen, "%s:%d: reload command too long", path, lineno);
				goto out;
			}
		} else if (strcmp(k, "renew_at") == 0) {
			char *end;
			double f = strtod(v, &end);
			if (*end || f < 0.1 || f > 0.95) {
				fg_seterr(err, errlen, "%s:%d: renew_at '%s' must be a fraction of the lifetime between 0.1 and 0.95",
					  path, lineno, v);
				goto out;
			}
			cur->renew_at = f;
		} else {
			fg_seterr(err, errlen, "%s:%d: unknown key '%s' in [slot %s] (expected key_type, key, cert, chain, mode, owner, reload, renew_at)",
				  path, lineno, k, cur->name);
			goto out;
		}
	}
	if (cfg->bundle[0] == '\0' || cfg->state_dir[0] == '\0') {
		fg_seterr(err, errlen, "%s: 'bundle' and 'state_dir' are required", path);
		goto out;
	}
	if (cfg->nslots == 0) {
		fg_seterr(err, errlen, "%s: no [slot NAME] section; define at least one certificate slot", path);
		goto out;
	}
	for (size_t i = 0; i < cfg->nslots; i++) {
		struct agent_slot *s = &cfg->slots[i];
		if (s->key[0] == '\0' || s->cert[0] == '\0') {
			fg_seterr(err, errlen, "%s: [slot %s] needs 'key' and 'cert' paths", path, s->name);
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			const struct agent_slot *o = &cfg->slots[j];
			if (!strcmp(s->key, o->key) || !strcmp(s->cert, o->cert) || !strcmp(s->key, o->cert) ||
			    !strcmp(s->cert, o->key)) {
				fg_seterr(err, errlen, "%s: slots '%s' and '%s' share a key or certificate path",
					  path, o->name, s->name);
				goto out;
			}
		}
		if (!strcmp(s->key, s->cert) || (s->chain[0] && (!strcmp(s->chain, s->key) || !strcmp(s->chain, s->cert)))) {
			fg_seterr(err, errlen, "%s: [slot %s] key, cert and chain must be different files", path, s->name);
			goto out;
		}
	}
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
