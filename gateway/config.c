/*
 * config: <state>/fleetgated.conf, Lua syntax, data only.
 *
 * The file runs once in a sandbox with no libraries at all (an empty
 * global table), a 1 MiB heap and 100,000 instructions; its globals are
 * then read and checked strictly: unknown settings, wrong types, unknown
 * key usages and dangling backend names are errors that name the setting,
 * so a typo never silently falls back to a default.
 *
 * All reading happens inside one protected C function (read_config): a
 * Lua API call that allocates may raise, and a raised error must land in
 * a pcall. Validation failures raise a light userdata marker after writing
 * the message into the context; everything allocated so far hangs off the
 * struct gw_config, which config_free releases.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "fg_log.h"
#include "fg_util.h"
#include "lua_sandbox.h"

#define CONF_FILE "fleetgated.conf"
#define CONF_MAX_FILE (256 * 1024)
#define CONF_MEMORY (1024 * 1024)
#define CONF_INSTRUCTIONS 100000

#define DAY 86400

struct conf_ctx {
	struct gw_config *cfg;
	char *err;
	size_t errlen;
	int failed;              /* err holds a validation message */
};

static const char *const top_keys[] = {
	"listen", "workers", "store", "policy", "curve_key", "plugin_dir", "log_level",
	"checkin_interval", "limits", "backends", "profiles", "http", "est", "user", "sandbox", "admin_group", "renewal", "ui", NULL,
};
static const char *const store_keys[] = { "engine", "path", NULL };
static const char *const limits_keys[] = {
	"max_message", "policy_memory", "policy_instructions", NULL,
};
static const char *const profile_keys[] = {
	"backend", "key_usage", "extended_key_usage", "max_validity", "default_validity", "names",
	NULL,
};

static const struct {
	const char *name;
	uint32_t bit;
} key_usages[] = {
	{ "digitalSignature", FG_KU_DIGITAL_SIGNATURE },
	{ "nonRepudiation", FG_KU_NON_REPUDIATION },
	{ "contentCommitment", FG_KU_NON_REPUDIATION },
	{ "keyEncipherment", FG_KU_KEY_ENCIPHERMENT },
	{ "dataEncipherment", FG_KU_DATA_ENCIPHERMENT },
	{ "keyAgreement", FG_KU_KEY_AGREEMENT },
};
#define KEY_USAGES_TEXT "digitalSignature, nonRepudiation (or contentCommitment), " \
	"keyEncipherment, dataEncipherment, keyAgreement"

static const char *const eku_names[] = {
	"clientAuth", "serverAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning",
	NULL,
};
#define EKU_TEXT "clientAuth, serverAuth, codeSigning, emailProtection, timeStamping, " \
	"OCSPSigning or a dotted OID such as 1.3.6.1.5.5.7.3.2"

static const struct {
	const char *name;
	unsigned bit;
} name_types[] = {
	{ "cn", NAME_CN }, { "dns", NAME_DNS }, { "ip", NAME_IP }, { "email", NAME_EMAIL },
};

uint32_t config_key_usage_bit(const char *name)
{
	if (name == NULL)
		return 0;
	for (size_t i = 0; i < sizeof key_usages / sizeof key_usages[0]; i++)
		if (strcmp(name, key_usages[i].name) == 0)
			return key_usages[i].bit;
	return 0;
}

/* Record a validation failure ("fleetgated.conf: <message>") and unwind to
 * the pcall in config_load. Does not return. */
static int cfail(lua_State *L, struct conf_ctx *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int cfail(lua_State *L, struct conf_ctx *c, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(c->err, c->errlen, CONF_FILE ": ");

	if (c->errlen > 0 && n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	c->failed = 1;
	lua_pushlightuserdata(L, c);
	return lua_error(L);
}

/* "a, b, c" of a NULL-terminated list, for messages. */
static const char *join_names(const char *const *names, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] != NULL && off < size; i++) {
		int n = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", names[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

static int in_list(const char *s, const char *const *names)
{
	for (size_t i = 0; names[i] != NULL; i++)
		if (strcmp(s, names[i]) == 0)
			return 1;
	return 0;
}

/* Every key of the table at t must be one of names. */
static void check_keys(lua_State *L, struct conf_ctx *c, int t, const char *label,
		       const char *const *names)
{
	char valid[256];

	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		if (lua_type(L, -2) != LUA_TSTRING)
			cfail(L, c, "%s: unexpected %s key; settings are named (key = value)", label,
			      luaL_typename(L, -2));
		if (!in_list(lua_tostring(L, -2), names))
			cfail(L, c, "%s: unknown field '%s'; valid fields are %s", label,
			      lua_tostring(L, -2), join_names(names, valid, sizeof valid));
		lua_pop(L, 1);
	}
}

/* Push t[key] (raw) and return its type. */
static int field(lua_State *L, int t, const char *key)
{
	lua_pushstring(L, key);
	return lua_rawget(L, t);
}

/* A string setting into buf; absent leaves buf (the default) alone. */
static void get_string(lua_State *L, struct conf_ctx *c, int t, const char *key,
		       const char *label, char *buf, size_t size)
{
	size_t len;
	const char *s;
	int ty = field(L, t, key);

	if (ty != LUA_TNIL) {
		if (ty != LUA_TSTRING)
			cfail(L, c, "%s must be a string, not %s", label, lua_typename(L, ty));
		s = lua_tolstring(L, -1, &len);
		if (len >= size || strlen(s) != len)
			cfail(L, c, "%s is too long or contains a NUL byte (at most %zu bytes)", label,
			      size - 1);
		memcpy(buf, s, len + 1);
	}
	lua_pop(L, 1);
}

/* Make the path in buf absolute by joining it to the state directory
 * (an absolute path stays as it is; "" stays empty). */
static void resolve_path(lua_State *L, struct conf_ctx *c, const char *label, char *buf,
			 size_t size)
{
	char rel[PATH_MAX];

	if (buf[0] == '\0')
		return;
	fg_strlcpy(rel, buf, sizeof rel);
	if (fg_path_join(c->cfg->state_dir, rel, buf, size) != 0)
		cfail(L, c, "%s: path '%s' is too long", label, rel);
}

/* A path setting (or the default already in out), made absolute. */
static void get_path(lua_State *L, struct conf_ctx *c, int t, const char *key, const char *label,
		     char *out, size_t size)
{
	get_string(L, c, t, key, label, out, size);
	resolve_path(L, c, label, out, size);
}

/* A whole number in [min, max]; absent leaves *out alone. */
static void get_int(lua_State *L, struct conf_ctx *c, int t, const char *key, const char *label,
		    int64_t min, int64_t max, int64_t *out)
{
	int ty = field(L, t, key), isint = 0;
	lua_Integer v = 0;

	if (ty != LUA_TNIL) {
		if (ty == LUA_TNUMBER)
			v = lua_tointegerx(L, -1, &isint);
		if (!isint)
			cfail(L, c, "%s must be a whole number", label);
		if (v < min || v > max)
			cfail(L, c, "%s is %lld; it must be between %lld and %lld", label, (long long)v,
			      (long long)min, (long long)max);
		*out = (int64_t)v;
	}
	lua_pop(L, 1);
}

/* A duration: seconds as a number, or a string fg_parse_duration takes
 * ("90d", "12h", "3600"). Must be positive and at most max. */
static void get_duration(lua_State *L, struct conf_ctx *c, int t, const char *key,
			 const char *label, int64_t max, int64_t *out)
{
	int ty = field(L, t, key), isint = 0;
	int64_t v = -1;

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (ty == LUA_TNUMBER) {
		v = (int64_t)lua_tointegerx(L, -1, &isint);
		if (!isint)
			v = -1;
	} else if (ty == LUA_TSTRING) {
		v = fg_parse_duration(lua_tostring(L, -1));
	}
	if (v <= 0)
		cfail(L, c, "%s: '%s' is not a duration; use seconds or a number with an s, m, h, d, w "
		      "or y suffix, e.g. \"90d\"", label,
		      ty == LUA_TSTRING ? lua_tostring(L, -1) : lua_typename(L, ty));
	if (v > max)
		cfail(L, c, "%s: %lld seconds is more than the maximum of %lld", label, (long long)v,
		      (long long)max);
	*out = v;
	lua_pop(L, 1);
}

/* A size in bytes: a number, or a string with an optional K, M or G
 * suffix (powers of 1024), within [min, max]. */
static void get_size(lua_State *L, struct conf_ctx *c, int t, const char *key, const char *label,
		     uint64_t min, uint64_t max, uint64_t *out)
{
	int ty = field(L, t, key), isint = 0;
	uint64_t v = 0;
	int ok = 0;

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (ty == LUA_TNUMBER) {
		lua_Integer i = lua_tointegerx(L, -1, &isint);
		if (isint && i > 0) {
			v = (uint64_t)i;
			ok = 1;
		}
	} else if (ty == LUA_TSTRING) {
		const char *s = lua_tostring(L, -1);
		char *end = NULL;
		unsigned long long n;
		errno = 0;
		n = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
		if (end != NULL && errno == 0 && n > 0) {
			uint64_t mult = 1;
			if (*end == 'K' || *end == 'k')
				mult = 1024, end++;
			else if (*end == 'M' || *end == 'm')
				mult = 1024 * 1024, end++;
			else if (*end == 'G' || *end == 'g')
				mult = 1024 * 1024 * 1024, end++;
			if (*end == '\0' && n <= UINT64_MAX / mult) {
				v = n * mult;
				ok = 1;
			}
		}
	}
	if (!ok)
		cfail(L, c, "%s is not a size; use bytes or a number with K, M or G, e.g. \"4M\"", label);
	if (v < min || v > max)
		cfail(L, c, "%s is %llu bytes; it must be between %llu and %llu", label,
		      (unsigned long long)v, (unsigned long long)min, (unsigned long long)max);
	*out = v;
	lua_pop(L, 1);
}

/* Names of backends and profiles: 1-63 of A-Z a-z 0-9 . _ - */
static int name_ok(const char *s, size_t len)
{
	if (len == 0 || len > 63)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

/* A dotted OID: at least two arcs, the first 0-2, no empty arcs and no
 * leading zeros. */
static int oid_ok(const char *s)
{
	int arcs = 0;

	if (s[0] < '0' || s[0] > '2' || s[1] != '.')
		return 0;
	while (*s) {
		const char *start = s;
		while (*s >= '0' && *s <= '9')
			s++;
		if (s == start || (s - start > 1 && *start == '0') || s - start > 10)
			return 0;
		arcs++;
		if (*s == '.')
			s++;
		else if (*s != '\0')
			return 0;
		else
			break;
	}
	return arcs >= 2 && s[-1] != '.';
}

/* The value at -1 must be a plain list of strings; returns its length. */
static size_t check_list(lua_State *L, struct conf_ctx *c, const char *label, const char *example)
{
	lua_Unsigned n;
	size_t keys = 0;
	int t = lua_gettop(L);

	if (lua_type(L, t) != LUA_TTABLE)
		cfail(L, c, "%s must be a list of names, e.g. %s", label, example);
	n = lua_rawlen(L, t);
	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		keys++;
		if (lua_type(L, -1) != LUA_TSTRING)
			cfail(L, c, "%s must be a list of names (strings), e.g. %s", label, example);
		lua_pop(L, 1);
	}
	if (keys != n)
		cfail(L, c, "%s must be a plain list, e.g. %s", label, example);
	return (size_t)n;
}

static void read_key_usage(lua_State *L, struct conf_ctx *c, int t, const char *label,
			   struct config_profile *p)
{
	size_t n;

	if (field(L, t, "key_usage") == LUA_TNIL) {
		p->key_usage = FG_KU_DIGITAL_SIGNATURE;
		lua_pop(L, 1);
		return;
	}
	n = check_list(L, c, label, "{ \"digitalSignature\" }");
	p->key_usage = 0;
	for (size_t i = 1; i <= n; i++) {
		uint32_t bit;
		lua_rawgeti(L, -1, (lua_Integer)i);
		bit = config_key_usage_bit(lua_tostring(L, -1));
		if (bit == 0)
			cfail(L, c, "%s: unknown key usage '%s'; valid names are " KEY_USAGES_TEXT, label,
			      lua_tostring(L, -1));
		p->key_usage |= bit;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static void read_eku(lua_State *L, struct conf_ctx *c, int t, const char *label,
		     struct config_profile *p)
{
	size_t n;

	if (field(L, t, "extended_key_usage") == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	n = check_list(L, c, label, "{ \"clientAuth\" }");
	if (n > CONFIG_MAX_EKU)
		cfail(L, c, "%s: %zu entries; at most %d are allowed", label, n, CONFIG_MAX_EKU);
	for (size_t i = 1; i <= n; i++) {
		const char *s;
		lua_rawgeti(L, -1, (lua_Integer)i);
		s = lua_tostring(L, -1);
		if (!in_list(s, eku_names) && !oid_ok(s))
			cfail(L, c, "%s: unknown extended key usage '%s'; valid names are " EKU_TEXT,
			      label, s);
		p->eku[p->neku] = strdup(s);
		if (p->eku[p->neku] == NULL)
			cfail(L, c, "out of memory");
		p->neku++;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static void read_names(lua_State *L, struct conf_ctx *c, int t, const char *label,
		       struct config_profile *p)
{
	size_t n;

	p->names = NAME_CN | NAME_DNS;
	if (field(L, t, "names") == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	n = check_list(L, c, label, "{ \"cn\", \"dns\" }");
	p->names = 0;
	for (size_t i = 1; i <= n; i++) {
		unsigned bit = 0;
		lua_rawgeti(L, -1, (lua_Integer)i);
		for (size_t j = 0; j < sizeof name_types / sizeof name_types[0]; j++)
			if (strcmp(lua_tostring(L, -1), name_types[j].name) == 0)
				bit = name_types[j].bit;
		if (bit == 0)
			cfail(L, c, "%s: unknown name type '%s'; valid types are cn, dns, ip, email", label,
			      lua_tostring(L, -1));
		p->names |= bit;
		lua_pop(L, 1);
	}
	if (p->names == 0)
		cfail(L, c, "%s: a profile must allow at least one name type (cn, dns, ip, email)", label);
	lua_pop(L, 1);
}

/* The table at -1 as a list of (string key -> table) entries: counts them
 * and checks the names. */
static size_t count_named(lua_State *L, struct conf_ctx *c, const char *label)
{
	int t = lua_gettop(L);
	size_t n = 0;

	if (lua_type(L, t) != LUA_TTABLE)
		cfail(L, c, "%s must be a table of named entries", label);
	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		size_t len = 0;
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
		if (k == NULL || !name_ok(k, len))
			cfail(L, c, "%s: entry names must be 1-63 of A-Z a-z 0-9 . _ - (e.g. [\"local\"] = {...})",
			      label);
		if (lua_type(L, -1) != LUA_TTABLE)
			cfail(L, c, "%s.%s must be a table", label, k);
		n++;
		lua_pop(L, 1);
	}
	return n;
}

/* One setting value as a string for the plugin: strings as they are,
 * numbers in decimal, booleans "yes"/"no". malloc'd. */
static char *setting_text(lua_State *L, struct conf_ctx *c, int idx, const char *label,
			  const char *key)
{
	char buf[64];
	size_t len;
	const char *s;

	switch (lua_type(L, idx)) {
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &len);
		if (strlen(s) != len)
			cfail(L, c, "%s.%s contains a NUL byte", label, key);
		return strdup(s);
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
		else
			snprintf(buf, sizeof buf, "%.14g", (double)lua_tonumber(L, idx));
		return strdup(buf);
	case LUA_TBOOLEAN:
		return strdup(lua_toboolean(L, idx) ? "yes" : "no");
	default:
		cfail(L, c, "%s.%s must be a string, number or boolean, not %s", label, key,
		      luaL_typename(L, idx));
		return NULL;
	}
}

/* Append one setting to b; the copies belong to b from here on. */
static void add_setting(lua_State *L, struct conf_ctx *c, struct config_backend *b, char *k,
			char *v)
{
	if (k == NULL || v == NULL) {
		free(k);
		free(v);
		cfail(L, c, "out of memory");
	}
	b->settings[b->nsettings].key = k;
	b->settings[b->nsettings].value = v;
	b->nsettings++;
}

static void read_backend(lua_State *L, struct conf_ctx *c, int t, const char *name,
			 struct config_backend *b)
{
	char label[128], lbl[160];
	size_t n = 0;

	snprintf(label, sizeof label, "backends.%s", name);
	fg_strlcpy(b->name, name, sizeof b->name);
	snprintf(lbl, sizeof lbl, "%s.plugin", label);
	get_string(L, c, t, "plugin", lbl, b->plugin, sizeof b->plugin);
	if (b->plugin[0] == '\0')
		cfail(L, c, "%s: set plugin = \"local\" (or acme, scep, est)", label);
	if (!name_ok(b->plugin, strlen(b->plugin)))
		cfail(L, c, "%s.plugin: '%s' is not a plugin name", label, b->plugin);

	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		if (lua_type(L, -2) != LUA_TSTRING)
			cfail(L, c, "%s: settings must be named (key = value)", label);
		n++;
		lua_pop(L, 1);
	}
	/* n - 1 settings besides plugin, plus name and state_dir */
	b->settings = calloc(n + 1, sizeof *b->settings);
	if (b->settings == NULL)
		cfail(L, c, "out of memory");
	add_setting(L, c, b, strdup("name"), strdup(name));
	add_setting(L, c, b, strdup("state_dir"), strdup(c->cfg->state_dir));

	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		const char *k = lua_tostring(L, -2);
		if (strcmp(k, "plugin") != 0) {
			if (strcmp(k, "name") == 0 || strcmp(k, "state_dir") == 0)
				cfail(L, c, "%s.%s is set by the gateway; remove it", label, k);
			char *v = setting_text(L, c, lua_gettop(L), label, k);
			add_setting(L, c, b, strdup(k), v);
		}
		lua_pop(L, 1);
	}
}

static int cmp_backend(const void *a, const void *b)
{
	return strcmp(((const struct config_backend *)a)->name,
		      ((const struct config_backend *)b)->name);
}

static int cmp_profile(const void *a, const void *b)
{
	return strcmp(((const struct config_profile *)a)->name,
		      ((const struct config_profile *)b)->name);
}

static void read_backends(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	size_t n;
	int t;

	if (field(L, g, "backends") == LUA_TNIL)
		cfail(L, c, "no backends are defined; add backends = { [\"local\"] = { plugin = \"local\", ca_dir = \"ca\" } }");
	t = lua_gettop(L);
	n = count_named(L, c, "backends");
	if (n == 0)
		cfail(L, c, "backends is empty; define at least one backend");
	cfg->backends = calloc(n, sizeof *cfg->backends);
	if (cfg->backends == NULL)
		cfail(L, c, "out of memory");
	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		/* count_named bounded n and checked every entry; counted
		 * before reading so that config_free sees a partial entry */
		struct config_backend *b = &cfg->backends[cfg->nbackends++];
		read_backend(L, c, lua_gettop(L), lua_tostring(L, -2), b);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	qsort(cfg->backends, cfg->nbackends, sizeof *cfg->backends, cmp_backend);
}

static void read_profile(lua_State *L, struct conf_ctx *c, int t, const char *name,
			 struct config_profile *p)
{
	struct gw_config *cfg = c->cfg;
	char label[128], lbl[160];
	int64_t dflt = -1;

	snprintf(label, sizeof label, "profiles.%s", name);
	fg_strlcpy(p->name, name, sizeof p->name);
	check_keys(L, c, t, label, profile_keys);

	snprintf(lbl, sizeof lbl, "%s.backend", label);
	get_string(L, c, t, "backend", lbl, p->backend, sizeof p->backend);
	if (p->backend[0] == '\0') {
		if (cfg->nbackends != 1)
			cfail(L, c, "%s: set backend = the name of one of the backends", label);
		fg_strlcpy(p->backend, cfg->backends[0].name, sizeof p->backend);
	}
	if (config_backend(cfg, p->backend) == NULL) {
		char names[256];
		size_t off = 0;
		names[0] = '\0';
		for (size_t i = 0; i < cfg->nbackends && off < sizeof names; i++) {
			int k = snprintf(names + off, sizeof names - off, "%s%s", i ? ", " : "",
					 cfg->backends[i].name);
			off += k > 0 ? (size_t)k : 0;
		}
		cfail(L, c, "%s: no backend named '%s' is defined (defined: %s)", lbl, p->backend, names);
	}

	snprintf(lbl, sizeof lbl, "%s.key_usage", label);
	read_key_usage(L, c, t, lbl, p);
	snprintf(lbl, sizeof lbl, "%s.extended_key_usage", label);
	read_eku(L, c, t, lbl, p);
	snprintf(lbl, sizeof lbl, "%s.names", label);
	read_names(L, c, t, lbl, p);

	p->max_validity = 90 * DAY;
	snprintf(lbl, sizeof lbl, "%s.max_validity", label);
	get_duration(L, c, t, "max_validity", lbl, 100LL * 366 * DAY, &p->max_validity);
	snprintf(lbl, sizeof lbl, "%s.default_validity", label);
	get_duration(L, c, t, "default_validity", lbl, 100LL * 366 * DAY, &dflt);
	if (dflt < 0)
		dflt = p->max_validity < 30 * DAY ? p->max_validity : 30 * DAY;
	if (dflt > p->max_validity)
		cfail(L, c, "%s: default_validity (%lld s) is longer than max_validity (%lld s)", label,
		      (long long)dflt, (long long)p->max_validity);
	p->default_validity = dflt;
}

static void read_profiles(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	size_t n;
	int t;

	if (field(L, g, "profiles") == LUA_TNIL)
		cfail(L, c, "no profiles are defined; add profiles = { default = { backend = \"local\" } }");
	t = lua_gettop(L);
	n = count_named(L, c, "profiles");
	cfg->profiles = calloc(n ? n : 1, sizeof *cfg->profiles);
	if (cfg->profiles == NULL)
		cfail(L, c, "out of memory");
	lua_pushnil(L);
	while (lua_next(L, t) != 0) {
		struct config_profile *p = &cfg->profiles[cfg->nprofiles++];
		read_profile(L, c, lua_gettop(L), lua_tostring(L, -2), p);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	qsort(cfg->profiles, cfg->nprofiles, sizeof *cfg->profiles, cmp_profile);
	if (config_profile(cfg, "default") == NULL)
		cfail(L, c, "no profile named 'default'; the gateway uses it when a policy names none");
}

static const char *const http_keys[] = { "listen", NULL };

/* http = { listen = "HOST:PORT" }: the gateway's HTTP side (docs/http.md).
 * Absent, or listen = "", turns it off. */
static void read_http(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	char host[256];
	int port;

	if (field(L, g, "http") != LUA_TNIL) {
		int t = lua_gettop(L);
		if (lua_type(L, t) != LUA_TTABLE)
			cfail(L, c, "http must be a table, e.g. http = { listen = \"127.0.0.1:7780\" }");
		check_keys(L, c, t, "http", http_keys);
		get_string(L, c, t, "listen", "http.listen", cfg->http_listen, sizeof cfg->http_listen);
		if (cfg->http_listen[0] != '\0' &&
		    config_http_split(cfg->http_listen, host, sizeof host, &port) != 0)
			cfail(L, c, "http.listen: '%s' is not HOST:PORT; use e.g. \"127.0.0.1:7780\" or \"[::1]:7780\"",
			      cfg->http_listen);
	}
	lua_pop(L, 1);
}

/* "2/3", "0.5", "1" -> a fraction in [0, 1]; -1 otherwise. */
double config_fraction(const char *s)
{
	char *end;
	double v;
	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s)
		return -1;
	if (*end == '/') {
		const char *d = end + 1;
		double q = strtod(d, &end);
		if (end == d || q <= 0)
			return -1;
		v /= q;
	}
	if (*end != '\0' || !(v >= 0 && v <= 1))
		return -1;
	return v;
}

static double get_fraction(lua_State *L, struct conf_ctx *c, int t, const char *key,
			   const char *label, double dflt)
{
	char buf[64] = "";
	int ty = field(L, t, key);
	double v = dflt;
	if (ty == LUA_TNUMBER) {
		v = lua_tonumber(L, -1);
		if (!(v >= 0 && v <= 1))
			cfail(L, c, "%s must be a fraction of the lifetime between 0 and 1, like \"1/2\"", label);
	}
	lua_pop(L, 1);
	if (ty == LUA_TNUMBER)
		return v;
	get_string(L, c, t, key, label, buf, sizeof buf);
	if (buf[0] != '\0' && (v = config_fraction(buf)) < 0)
		cfail(L, c, "%s: '%s' is not a fraction of the lifetime; write it like \"1/2\" or \"0.5\"", label, buf);
	return v;
}

static const char *const renewal_keys[] = { "smoothing", "window", "earliest", "max_per_hour", NULL };

/* renewal = { smoothing = true, window = "2/3..5/6", earliest = "1/2",
 * max_per_hour = 0 } (docs/lifecycle.md "Renewal windows") */
static void read_renewal(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	if (field(L, g, "renewal") != LUA_TNIL) {
		int t = lua_gettop(L), ty;
		char win[64] = "";
		int64_t v = cfg->renewal_max_per_hour;
		if (lua_type(L, t) != LUA_TTABLE)
			cfail(L, c, "renewal must be a table, e.g. renewal = { window = \"2/3..5/6\", max_per_hour = 500 }");
		check_keys(L, c, t, "renewal", renewal_keys);
		if ((ty = field(L, t, "smoothing")) != LUA_TNIL) {
			if (ty != LUA_TBOOLEAN)
				cfail(L, c, "renewal.smoothing must be true or false");
			cfg->renewal_smoothing = lua_toboolean(L, -1);
		}
		lua_pop(L, 1);
		get_string(L, c, t, "window", "renewal.window", win, sizeof win);
		if (win[0] != '\0') {
			char *dots = strstr(win, "..");
			double a = -1, b = -1;
			if (dots != NULL) {
				*dots = '\0';
				a = config_fraction(win);
				b = config_fraction(dots + 2);
			}
			if (a < 0 || b < 0 || a >= b)
				cfail(L, c, "renewal.window must be two fractions of the lifetime, the first smaller, like \"2/3..5/6\"");
			cfg->renewal_from = a;
			cfg->renewal_to = b;
		}
		double e = get_fraction(L, c, t, "earliest", "renewal.earliest", -1);
		if (e >= 0)
			cfg->renewal_earliest = e;
		else if (cfg->renewal_earliest > cfg->renewal_from)  /* the default follows the window */
			cfg->renewal_earliest = cfg->renewal_from;
		get_int(L, c, t, "max_per_hour", "renewal.max_per_hour", 0, 100000000, &v);
		cfg->renewal_max_per_hour = (long)v;
		if (cfg->renewal_earliest > cfg->renewal_from)
			cfail(L, c, "renewal.earliest (%g) is later than the window's start (%g); it must be at or before it",
			      cfg->renewal_earliest, cfg->renewal_from);
	}
	lua_pop(L, 1);
}

static const char *const ui_keys[] = { "enabled", "token", NULL };

/* ui = { enabled = true, token = "ui/token" } (docs/dashboard.md) */
static void read_ui(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	if (field(L, g, "ui") != LUA_TNIL) {
		int t = lua_gettop(L), ty;
		if (lua_type(L, t) != LUA_TTABLE)
			cfail(L, c, "ui must be a table, e.g. ui = { enabled = true }");
		check_keys(L, c, t, "ui", ui_keys);
		if ((ty = field(L, t, "enabled")) != LUA_TNIL) {
			if (ty != LUA_TBOOLEAN)
				cfail(L, c, "ui.enabled must be true or false");
			cfg->ui_enabled = lua_toboolean(L, -1);
		}
		lua_pop(L, 1);
		get_string(L, c, t, "token", "ui.token", cfg->ui_token_path, sizeof cfg->ui_token_path);
	}
	lua_pop(L, 1);
	if (cfg->ui_token_path[0] == '\0')
		cfail(L, c, "ui.token must not be empty");
	resolve_path(L, c, "ui.token", cfg->ui_token_path, sizeof cfg->ui_token_path);
	if (cfg->ui_enabled && cfg->http_listen[0] == '\0' && cfg->est_listen[0] == '\0')
		cfail(L, c, "ui.enabled needs a place to serve it: set est.listen (HTTPS) or http.listen on a loopback address");
	if (cfg->ui_enabled && cfg->est_listen[0] == '\0') {
		char host[256];
		int port;
		if (config_http_split(cfg->http_listen, host, sizeof host, &port) == 0 && !config_host_is_loopback(host))
			cfail(L, c, "ui.enabled serves the dashboard over plain HTTP only on a loopback address, and "
				    "http.listen is '%s': set est.listen to serve it over HTTPS, or put http.listen on "
				    "127.0.0.1 or [::1]", cfg->http_listen);
	}
}

int config_host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (strcmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static const char *const est_keys[] = { "listen", "cert", "key", "labels", NULL };

static int cmp_est_label(const void *a, const void *b)
{
	return strcmp(((const struct config_est_label *)a)->name,
		      ((const struct config_est_label *)b)->name);
}

/* A label segment as RFC 7030 3.2.2 allows it (we take the unreserved
 * characters of RFC 3986 only), and not an operation name. */
static int est_label_valid(const char *s)
{
	static const char *const ops[] = { "cacerts", "simpleenroll", "simplereenroll", "csrattrs",
					   "serverkeygen", "fullcmc", NULL };
	size_t n = strlen(s);
	if (n == 0 || n > 63 || in_list(s, ops))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.' ||
		      s[i] == '~'))
			return 0;
	return 1;
}

/* est = { listen =, cert =, key =, labels = { name = "profile" } }: the EST
 * front-end (docs/est.md). Absent, or listen = "", turns it off. */
static void read_est(lua_State *L, struct conf_ctx *c, int g)
{
	struct gw_config *cfg = c->cfg;
	char host[256];
	int port;

	if (field(L, g, "est") == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	int t = lua_gettop(L);
	if (lua_type(L, t) != LUA_TTABLE)
		cfail(L, c, "est must be a table, e.g. est = { listen = \"127.0.0.1:8443\", cert = \"est/server.crt\", key = \"est/server.key\" }");
	check_keys(L, c, t, "est", est_keys);
	get_string(L, c, t, "listen", "est.listen", cfg->est_listen, sizeof cfg->est_listen);
	get_path(L, c, t, "cert", "est.cert", cfg->est_cert, sizeof cfg->est_cert);
	get_path(L, c, t, "key", "est.key", cfg->est_key, sizeof cfg->est_key);
	if (cfg->est_listen[0] != '\0') {
		if (config_http_split(cfg->est_listen, host, sizeof host, &port) != 0)
			cfail(L, c, "est.listen: '%s' is not HOST:PORT; use e.g. \"127.0.0.1:8443\" or \"[::1]:8443\"",
			      cfg->est_listen);
		if (cfg->est_cert[0] == '\0' || cfg->est_key[0] == '\0')
			cfail(L, c, "est: cert and key (the TLS server certificate and key, PEM) are required; fleetgate init --est HOST:PORT makes them");
	}
	if (field(L, t, "labels") != LUA_TNIL) {
		int lt = lua_gettop(L);
		if (lua_type(L, lt) != LUA_TTABLE)
			cfail(L, c, "est.labels must be a table of label = \"profile\", e.g. { vpn = \"vpn\" }");
		cfg->est_labels = calloc(CONFIG_MAX_EST_LABELS, sizeof *cfg->est_labels);
		if (cfg->est_labels == NULL)
			cfail(L, c, "out of memory");
		lua_pushnil(L);
		while (lua_next(L, lt) != 0) {
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
				cfail(L, c, "est.labels: entries are label = \"profile\" (both strings)");
			const char *name = lua_tostring(L, -2), *prof = lua_tostring(L, -1);
			if (!est_label_valid(name))
				cfail(L, c, "est.labels: '%s' is not a usable label: use 1-63 of A-Z a-z 0-9 - . _ ~, not an EST operation name",
				      name);
			if (config_profile(cfg, prof) == NULL)
				cfail(L, c, "est.labels.%s: no profile named '%s' is defined", name, prof);
			if (cfg->nest_labels == CONFIG_MAX_EST_LABELS)
				cfail(L, c, "est.labels: at most %d labels", CONFIG_MAX_EST_LABELS);
			struct config_est_label *l = &cfg->est_labels[cfg->nest_labels++];
			fg_strlcpy(l->name, name, sizeof l->name);
			fg_strlcpy(l->profile, prof, sizeof l->profile);
			lua_pop(L, 1);
		}
		qsort(cfg->est_labels, cfg->nest_labels, sizeof *cfg->est_labels, cmp_est_label);
	}
	lua_pop(L, 2);
}

const struct config_est_label *config_est_label(const struct gw_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nest_labels; i++)
		if (strcmp(cfg->est_labels[i].name, name) == 0)
			return &cfg->est_labels[i];
	return NULL;
}

/* The protected reader: globals -> struct gw_config, checking everything.
 * Argument 1 is the struct conf_ctx. */
static int read_config(lua_State *L)
{
	struct conf_ctx *c = lua_touserdata(L, 1);
	struct gw_config *cfg = c->cfg;
	char valid[256];
	int64_t v;
	uint64_t u;
	int g;

	lua_settop(L, 1);
	lua_pushglobaltable(L);
	g = lua_gettop(L);

	lua_pushnil(L);
	while (lua_next(L, g) != 0) {
		if (lua_type(L, -2) != LUA_TSTRING || !in_list(lua_tostring(L, -2), top_keys))
			cfail(L, c, "unknown setting '%s'; valid settings are %s (use 'local' for helper variables)",
			      lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2),
			      join_names(top_keys, valid, sizeof valid));
		lua_pop(L, 1);
	}

	get_string(L, c, g, "listen", "listen", cfg->listen, sizeof cfg->listen);
	if (strncmp(cfg->listen, "tcp://", 6) != 0 && strncmp(cfg->listen, "ipc://", 6) != 0)
		cfail(L, c, "listen: '%s' is not a ZeroMQ endpoint; use tcp://HOST:PORT", cfg->listen);

	v = cfg->workers;
	get_int(L, c, g, "workers", "workers", 1, 64, &v);
	cfg->workers = (int)v;

	if (field(L, g, "store") != LUA_TNIL) {
		int t = lua_gettop(L);
		if (lua_type(L, t) != LUA_TTABLE)
			cfail(L, c, "store must be a table, e.g. { engine = \"sqlite\", path = \"fleetgate.db\" }");
		check_keys(L, c, t, "store", store_keys);
		get_string(L, c, t, "engine", "store.engine", cfg->store_engine, sizeof cfg->store_engine);
		if (strcmp(cfg->store_engine, "sqlite") != 0)
			cfail(L, c, "store.engine: '%s' is not supported; use \"sqlite\"", cfg->store_engine);
		get_string(L, c, t, "path", "store.path", cfg->store_path, sizeof cfg->store_path);
	}
	lua_pop(L, 1);
	if (cfg->store_path[0] == '\0')
		cfail(L, c, "store.path must not be empty");
	resolve_path(L, c, "store.path", cfg->store_path, sizeof cfg->store_path);

	get_path(L, c, g, "policy", "policy", cfg->policy_path, sizeof cfg->policy_path);
	get_path(L, c, g, "curve_key", "curve_key", cfg->curve_key_path, sizeof cfg->curve_key_path);
	get_path(L, c, g, "plugin_dir", "plugin_dir", cfg->plugin_dir, sizeof cfg->plugin_dir);
	if (cfg->policy_path[0] == '\0' || cfg->curve_key_path[0] == '\0')
		cfail(L, c, "policy and curve_key must not be empty");

	get_string(L, c, g, "log_level", "log_level", cfg->log_level, sizeof cfg->log_level);
	if (fg_log_level_parse(cfg->log_level) < 0)
		cfail(L, c, "log_level: '%s' is not a level; use error, warn, info or debug",
		      cfg->log_level);

	get_string(L, c, g, "user", "user", cfg->user, sizeof cfg->user);
	get_string(L, c, g, "sandbox", "sandbox", cfg->sandbox, sizeof cfg->sandbox);
	get_string(L, c, g, "admin_group", "admin_group", cfg->admin_group, sizeof cfg->admin_group);
	if (config_sandbox_mode(cfg) < 0)
		cfail(L, c, "sandbox: '%s' is not a mode; use \"required\" (the default), \"best-effort\" or \"off\"",
		      cfg->sandbox);

	v = cfg->checkin_interval;
	get_duration(L, c, g, "checkin_interval", "checkin_interval", 30 * DAY, &v);
	cfg->checkin_interval = (int)v;

	if (field(L, g, "limits") != LUA_TNIL) {
		int t = lua_gettop(L);
		if (lua_type(L, t) != LUA_TTABLE)
			cfail(L, c, "limits must be a table, e.g. { max_message = 65536 }");
		check_keys(L, c, t, "limits", limits_keys);
		u = cfg->max_message;
		get_size(L, c, t, "max_message", "limits.max_message", 1024, 16 * 1024 * 1024, &u);
		cfg->max_message = (size_t)u;
		u = cfg->policy_memory;
		get_size(L, c, t, "policy_memory", "limits.policy_memory", 256 * 1024,
			 1024ULL * 1024 * 1024, &u);
		cfg->policy_memory = (size_t)u;
		v = (int64_t)cfg->policy_instructions;
		get_int(L, c, t, "policy_instructions", "limits.policy_instructions", 1000,
			1000000000000LL, &v);
		cfg->policy_instructions = (uint64_t)v;
	}
	lua_pop(L, 1);

	read_backends(L, c, g);
	read_profiles(L, c, g);
	read_http(L, c, g);
	read_est(L, c, g);
	read_renewal(L, c, g);
	read_ui(L, c, g);
	return 0;
}

/* See config.h. */
int config_sandbox_mode(const struct gw_config *cfg)
{
	if (strcmp(cfg->sandbox, "required") == 0)
		return SANDBOX_REQUIRED;
	if (strcmp(cfg->sandbox, "best-effort") == 0)
		return SANDBOX_BEST_EFFORT;
	if (strcmp(cfg->sandbox, "off") == 0)
		return SANDBOX_OFF;
	return -1;
}

/* msg into err, with "fleetgated.conf: " in front unless it names the file. */
static void conf_err(char *err, size_t errlen, const char *msg)
{
	if (strncmp(msg, CONF_FILE, strlen(CONF_FILE)) == 0)
		fg_seterr(err, errlen, "%s", msg);
	else
		fg_seterr(err, errlen, CONF_FILE ": %s", msg);
}

static void set_defaults(struct gw_config *cfg)
{
	fg_strlcpy(cfg->listen, "tcp://127.0.0.1:7700", sizeof cfg->listen);
	cfg->workers = FG_DEFAULT_WORKERS;
	fg_strlcpy(cfg->store_engine, "sqlite", sizeof cfg->store_engine);
	fg_strlcpy(cfg->store_path, "fleetgate.db", sizeof cfg->store_path);
	fg_strlcpy(cfg->policy_path, "policy.lua", sizeof cfg->policy_path);
	fg_strlcpy(cfg->curve_key_path, "keys/gateway.key", sizeof cfg->curve_key_path);
	fg_strlcpy(cfg->log_level, "info", sizeof cfg->log_level);
	cfg->checkin_interval = 3600;
	fg_strlcpy(cfg->sandbox, "required", sizeof cfg->sandbox);
	cfg->max_message = 65536;
	cfg->policy_memory = 4 * 1024 * 1024;
	cfg->policy_instructions = 1000000;
	cfg->renewal_smoothing = 1;
	cfg->renewal_from = 2.0 / 3;
	cfg->renewal_to = 5.0 / 6;
	cfg->renewal_earliest = 1.0 / 2;
	fg_strlcpy(cfg->ui_token_path, "ui/token", sizeof cfg->ui_token_path);
}

/* Load and check <state_dir>/fleetgated.conf. The state directory must
 * exist; it is made absolute and every relative path is joined to it.
 * Returns a config the caller frees with config_free, or NULL with err. */
struct gw_config *config_load(const char *state_dir, char *err, size_t errlen)
{
	struct gw_config *cfg = NULL, *ret = NULL;
	struct sandbox *sb = NULL;
	struct conf_ctx ctx;
	char path[PATH_MAX], lerr[512];
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	lua_State *L;

	cfg = calloc(1, sizeof *cfg);
	if (cfg == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	set_defaults(cfg);
	if (realpath(state_dir, cfg->state_dir) == NULL) {
		fg_seterr(err, errlen, "state directory %s: %s; create it with 'fleetgate init --state %s'",
			  state_dir, strerror(errno), state_dir);
		goto out;
	}
	if (fg_path_join(cfg->state_dir, CONF_FILE, path, sizeof path) != 0) {
		fg_seterr(err, errlen, "state directory path %s is too long", cfg->state_dir);
		goto out;
	}
	if (stat(path, &st) != 0 && errno == ENOENT) {
		fg_seterr(err, errlen, "%s does not exist; run 'fleetgate init --state %s' first", path,
			  state_dir);
		goto out;
	}
	if (fg_read_file(path, CONF_MAX_FILE, &text, &len, lerr, sizeof lerr) != 0) {
		fg_seterr(err, errlen, "%s", lerr);
		goto out;
	}
	sb = sandbox_new(CONF_MEMORY, CONF_INSTRUCTIONS, SANDBOX_LIBS_NONE, "the config file",
			 "config", err, errlen);
	if (sb == NULL)
		goto out;
	L = sandbox_lua(sb);
	if (sandbox_load(sb, "@" CONF_FILE, text, len, lerr, sizeof lerr) != 0 ||
	    sandbox_pcall(sb, 0, 0, lerr, sizeof lerr) != 0) {
		conf_err(err, errlen, lerr);
		goto out;
	}

	/* The file has run; reading it back runs no file code (there are no
	 * libraries, so no metatables), and gets the heap it needs. */
	sandbox_set_memory_limit(sb, 16 * CONF_MEMORY);
	memset(&ctx, 0, sizeof ctx);
	ctx.cfg = cfg;
	ctx.err = err;
	ctx.errlen = errlen;
	lua_pushcfunction(L, read_config);
	lua_pushlightuserdata(L, &ctx);
	if (sandbox_pcall(sb, 1, 0, lerr, sizeof lerr) != 0) {
		if (!ctx.failed)   /* else cfail wrote err */
			conf_err(err, errlen, lerr);
		goto out;
	}
	ret = cfg;
	cfg = NULL;
out:
	sandbox_free(sb);
	free(text);
	config_free(cfg);
	return ret;
}

void config_free(struct gw_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->nprofiles; i++)
		for (size_t j = 0; j < cfg->profiles[i].neku; j++)
			free(cfg->profiles[i].eku[j]);
	free(cfg->profiles);
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct config_backend *b = &cfg->backends[i];
		for (size_t j = 0; j < b->nsettings; j++) {
			free((char *)b->settings[j].key);
			free((char *)b->settings[j].value);
		}
		free(b->settings);
	}
	free(cfg->backends);
	free(cfg->est_labels);
	free(cfg);
}

const struct config_profile *config_profile(const struct gw_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nprofiles; i++)
		if (strcmp(cfg->profiles[i].name, name) == 0)
			return &cfg->profiles[i];
	return NULL;
}

const struct config_backend *config_backend(const struct gw_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (strcmp(cfg->backends[i].name, name) == 0)
			return &cfg->backends[i];
	return NULL;
}

/* listen as a Lua string literal body: quotes, backslashes and control
 * characters escaped, so any value round-trips through config_load. */
static void lua_quote(const char *s, char *out, size_t size)
{
	size_t o = 0;

	for (; *s && o + 5 < size; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, size - o, "\\%03u", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o] = '\0';
}

static const char default_text[] =
	"-- fleetgated configuration. Lua syntax, data only: the file runs once in an\n"
	"-- empty sandbox (no libraries) and its global settings are read back.\n"
	"-- Unknown settings are errors; use 'local' for helper variables.\n"
	"-- Relative paths are relative to this directory. Durations are seconds or\n"
	"-- strings such as \"90d\", \"12h\"; sizes are bytes or \"64K\", \"4M\".\n"
	"\n"
	"-- ZeroMQ endpoint of the gateway (CURVE server).\n"
	"listen = \"%s\"\n"
	"\n"
	"-- Worker threads, each with its own store connection and Lua state.\n"
	"-- Their store writes share commits (group commit), so more workers than\n"
	"-- cores keep both the CPU and the disk busy.\n"
	"workers = 16\n"
	"\n"
	"store = { engine = \"sqlite\", path = \"fleetgate.db\" }\n"
	"policy = \"policy.lua\"\n"
	"curve_key = \"keys/gateway.key\"\n"
	"\n"
	"-- error, warn, info or debug\n"
	"log_level = \"info\"\n"
	"\n"
	"-- Kernel confinement of the gateway (docs/security.md): \"required\"\n"
	"-- refuses to start where the kernel cannot apply it; \"best-effort\" and\n"
	"-- \"off\" are explicit downgrades.\n"
	"sandbox = \"required\"\n"
	"-- Started as root, the signer drops to this user once it holds the CA keys,\n"
	"-- and the daemon once its sockets are bound; unset, the signer drops to\n"
	"-- nobody and the daemon stays as started.\n"
	"-- user = \"fleetgate\"\n"
	"-- Besides root and the daemon's own user, members of this group may use the\n"
	"-- admin socket (admin.sock) through which the CLI works with a running daemon.\n"
	"-- admin_group = \"fleetgate-admin\"\n"
	"\n"
	"-- How often agents check in.\n"
	"checkin_interval = \"1h\"\n"
	"\n"
	"limits = {\n"
	"  max_message = 65536,          -- bytes per message; larger frames are dropped\n"
	"  policy_memory = 4194304,      -- bytes of Lua heap per worker\n"
	"  policy_instructions = 1000000, -- Lua instructions per policy call\n"
	"}\n"
	"\n"
	"-- Certificate authorities. Every key except plugin is passed to the plugin.\n"
	"backends = {\n"
	"  [\"local\"] = {\n"
	"    plugin = \"local\",\n"
	"    ca_dir = \"ca\",\n"
	"    key_type = \"p256\",          -- p256, p384, rsa3072, rsa4096\n"
	"    ca_validity = \"10y\",\n"
	"    ca_name = \"fleetgate local CA\",\n"
	"  },\n"
	"}\n"
	"\n"
	"-- What certificates may contain. A policy picks a profile (\"default\" when\n"
	"-- it names none) and can narrow it, never widen it.\n"
	"profiles = {\n"
	"  default = {\n"
	"    backend = \"local\",\n"
	"    key_usage = { \"digitalSignature\" },\n"
	"    extended_key_usage = { \"clientAuth\" },\n"
	"    max_validity = \"90d\",\n"
	"    default_validity = \"30d\",\n"
	"    names = { \"cn\", \"dns\" },\n"
	"  },\n"
	"  server = {\n"
	"    backend = \"local\",\n"
	"    key_usage = { \"digitalSignature\", \"keyEncipherment\" },\n"
	"    extended_key_usage = { \"serverAuth\", \"clientAuth\" },\n"
	"    max_validity = \"397d\",\n"
	"    default_validity = \"90d\",\n"
	"    names = { \"cn\", \"dns\", \"ip\" },\n"
	"  },\n"
	"}\n";

/* The text `fleetgate init` writes, listen filled in. malloc'd; NULL when
 * out of memory. */
char *config_default_text(const char *listen)
{
	char q[1024];
	size_t size;
	char *out;

	lua_quote(listen ? listen : "tcp://127.0.0.1:7700", q, sizeof q);
	size = sizeof default_text + strlen(q);
	out = malloc(size);
	if (out == NULL)
		return NULL;
	snprintf(out, size, default_text, q);
	return out;
}

/* See config.h: "127.0.0.1:7780", "[::1]:7780", "*:7780" (all addresses). */
int config_http_split(const char *listen, char *host, size_t hostlen, int *port)
{
	const char *colon, *h = listen;
	size_t hl;
	char *end;
	long p;

	if (listen == NULL || hostlen == 0)
		return -1;
	colon = strrchr(listen, ':');
	if (colon == NULL || colon == listen)
		return -1;
	hl = (size_t)(colon - listen);
	if (listen[0] == '[') {
		if (hl < 3 || listen[hl - 1] != ']')
			return -1;
		h = listen + 1;
		hl -= 2;
	} else if (memchr(listen, ':', hl) != NULL) {
		return -1;          /* a bare IPv6 address needs brackets */
	}
	if (hl >= hostlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (strcmp(host, "*") == 0)
		fg_strlcpy(host, "0.0.0.0", hostlen);
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

/* See config.h. The CRL and OCSP URLs go into the local backend's table by
 * assignment after it, so that the text `fleetgate init` writes above stays
 * as it is. A wildcard listen address becomes 127.0.0.1 in the URLs. */
char *config_http_text(const char *http_listen)
{
	char q[600], base[600], host[256];
	char *out = NULL;
	int port = 0;

	if (http_listen == NULL || http_listen[0] == '\0') {
		if (asprintf(&out,
			     "\n"
			     "-- The HTTP side (docs/http.md): /healthz, /metrics, CA certificates,\n"
			     "-- CRLs and OCSP, in plain HTTP. Off; to turn it on, uncomment:\n"
			     "-- http = { listen = \"127.0.0.1:7780\" }\n"
			     "-- and say where issued certificates point relying parties to:\n"
			     "-- backends[\"local\"].crl_url = \"http://127.0.0.1:7780/crl/local.crl\"\n"
			     "-- backends[\"local\"].ocsp_url = \"http://127.0.0.1:7780/ocsp\"\n") < 0)
			return NULL;
		return out;
	}
	if (config_http_split(http_listen, host, sizeof host, &port) != 0)
		return NULL;
	lua_quote(http_listen, q, sizeof q);
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
		snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
	else if (strchr(host, ':') != NULL)
		snprintf(base, sizeof base, "http://[%s]:%d", host, port);
	else
		snprintf(base, sizeof base, "http://%s:%d", host, port);
	lua_quote(base, host, sizeof host);
	if (asprintf(&out,
		     "\n"
		     "-- The HTTP side (docs/http.md): /healthz, /metrics, CA certificates,\n"
		     "-- CRLs and OCSP, in plain HTTP (CRLs and OCSP answers are signed).\n"
		     "http = { listen = \"%s\" }\n"
		     "\n"
		     "-- Where issued certificates point relying parties to: the CRL\n"
		     "-- distribution point and the OCSP responder. Use a name they can reach.\n"
		     "-- crl_validity is how long each CRL is valid (it is remade at half that).\n"
		     "backends[\"local\"].crl_url = \"%s/crl/local.crl\"\n"
		     "backends[\"local\"].ocsp_url = \"%s/ocsp\"\n"
		     "backends[\"local\"].crl_validity = \"7d\"\n",
		     q, host, host) < 0)
		return NULL;
	return out;
}

char *config_est_text(const char *est_listen)
{
	char *out = NULL, q[600], host[256];
	int port;

	if (est_listen == NULL || est_listen[0] == '\0') {
		if (asprintf(&out, "\n"
			     "-- The EST front-end (docs/est.md): RFC 7030 enrollment over HTTPS for\n"
			     "-- devices and tools that speak EST. fleetgate init --est HOST:PORT sets it up.\n"
			     "-- est = { listen = \"127.0.0.1:8443\", cert = \"est/server.crt\",\n"
			     "--         key = \"est/server.key\", labels = { } }\n") < 0)
			return NULL;
		return out;
	}
	if (config_http_split(est_listen, host, sizeof host, &port) != 0)
		return NULL;
	lua_quote(est_listen, q, sizeof q);
	if (asprintf(&out, "\n"
		     "-- The EST front-end (docs/est.md): RFC 7030 enrollment over HTTPS for\n"
		     "-- devices and tools that speak EST, with the same policy (req.protocol ==\n"
		     "-- \"est\"). labels map /.well-known/est/<label>/ to a profile.\n"
		     "est = { listen = \"%s\", cert = \"est/server.crt\", key = \"est/server.key\",\n"
		     "        labels = { } }\n", q) < 0)
		return NULL;
	return out;
}
