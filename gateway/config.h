/*
 * config: the gateway config file, <state>/fleetgated.conf.
 *
 * Lua syntax, data only: the file runs once in an empty sandbox (no
 * libraries, instruction cap) and its globals are read as settings. Example:
 *
 *   listen = "tcp://127.0.0.1:7700"
 *   workers = 2
 *   store = { engine = "sqlite", path = "fleetgate.db" }
 *   policy = "policy.lua"
 *   curve_key = "keys/gateway.key"
 *   log_level = "info"
 *   checkin_interval = 3600
 *   http = { listen = "127.0.0.1:7780" }     -- optional; docs/http.md
 *   est = { listen = "127.0.0.1:8443", cert = "est/server.crt",   -- optional;
 *           key = "est/server.key", labels = { vpn = "vpn" } }     -- docs/est.md
 *   limits = { max_message = 65536, policy_memory = 4194304,
 *              policy_instructions = 1000000 }
 *   backends = {
 *     ["local"] = { plugin = "local", ca_dir = "ca", key_type = "p256" },
 *   }
 *   profiles = {
 *     default = { backend = "local", key_usage = { "digitalSignature" },
 *                 extended_key_usage = { "clientAuth" }, max_validity = "90d",
 *                 default_validity = "30d", names = { "cn", "dns" } },
 *   }
 *
 * Relative paths are resolved against the state directory.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include "fleetgate/plugin.h"

enum config_name_type {
	NAME_CN    = 1u << 0,
	NAME_DNS   = 1u << 1,
	NAME_IP    = 1u << 2,
	NAME_EMAIL = 1u << 3
};

/* worker threads when fleetgated.conf names none: enough that commits
 * batch (see store.h, group commit) */
#define FG_DEFAULT_WORKERS 16
#define CONFIG_MAX_EKU 8

struct config_profile {
	char name[64];
	char backend[64];
	uint32_t key_usage;                 /* FG_KU_* */
	char *eku[CONFIG_MAX_EKU];          /* malloc'd names or OIDs */
	size_t neku;
	int64_t max_validity;               /* seconds */
	int64_t default_validity;           /* seconds */
	unsigned names;                     /* enum config_name_type bits allowed */
};

struct config_backend {
	char name[64];
	char plugin[64];
	struct fg_kv *settings;             /* malloc'd keys and values, incl. state_dir and name */
	size_t nsettings;
};

struct gw_config {
	char state_dir[PATH_MAX];           /* absolute */
	char listen[256];
	int workers;
	char store_engine[16];
	char store_path[PATH_MAX];          /* absolute */
	char policy_path[PATH_MAX];         /* absolute */
	char curve_key_path[PATH_MAX];      /* absolute */
	char plugin_dir[PATH_MAX];          /* "" = built-in search path */
	char log_level[16];
	int checkin_interval;               /* seconds */
	size_t max_message;                 /* bytes */
	size_t policy_memory;               /* bytes */
	uint64_t policy_instructions;
	struct config_profile *profiles;
	size_t nprofiles;
	struct config_backend *backends;
	size_t nbackends;
	char http_listen[256];              /* http.listen, "HOST:PORT"; "" = no HTTP side */
	char est_listen[256];               /* est.listen, "HOST:PORT"; "" = no EST front-end */
	char est_cert[PATH_MAX];            /* est.cert: TLS server certificate chain, PEM, absolute */
	char est_key[PATH_MAX];             /* est.key: its private key, PEM, absolute */
	struct config_est_label *est_labels; /* est.labels, sorted by name */
	size_t nest_labels;
	char user[64];                      /* user to drop to when started as root; "" = none given */
	char sandbox[16];                   /* "required" (default), "best-effort", "off" */
	char admin_group[64];               /* may use the admin socket besides root; "" = none */
	/* renewal = { ... }: server-assigned renewal windows (docs/lifecycle.md) */
	int renewal_smoothing;              /* renewal.smoothing, default on */
	double renewal_from, renewal_to;    /* renewal.window "2/3..5/6": fractions of the lifetime */
	double renewal_earliest;            /* renewal.earliest "1/2": where a full range spills to */
	long renewal_max_per_hour;          /* renewal.max_per_hour; 0 = no ceiling (levelled) */
	/* ui = { ... }: the dashboard and its JSON API (docs/dashboard.md) */
	int ui_enabled;                     /* ui.enabled, default off */
	char ui_token_path[PATH_MAX];       /* ui.token: file with the SHA-256 of the bearer token */
};

/* "2/3", "0.5", "1" -> fraction in [0, 1]; -1 when it is none. */
double config_fraction(const char *s);

enum config_sandbox {
	SANDBOX_REQUIRED,                   /* a sandbox the kernel cannot apply stops the start */
	SANDBOX_BEST_EFFORT,                /* ... is logged as a warning */
	SANDBOX_OFF,                        /* nothing is applied (say so in the log) */
	SANDBOX_MAX
};

/* cfg->sandbox as enum config_sandbox, or -1 when it is not a mode. */
int config_sandbox_mode(const struct gw_config *cfg);

#define CONFIG_MAX_EST_LABELS 64

/* One est.labels entry: /.well-known/est/<name>/... enrolls with profile. */
struct config_est_label {
	char name[64];                      /* RFC 7030 3.2.2 label segment */
	char profile[64];                   /* a profile of the config */
};

/* The est.labels entry for name, or NULL. */
const struct config_est_label *config_est_label(const struct gw_config *cfg, const char *name);

/* Read <state_dir>/fleetgated.conf. NULL with err ("fleetgated.conf:7: ...") on failure. */
struct gw_config *config_load(const char *state_dir, char *err, size_t errlen);
void config_free(struct gw_config *cfg);
const struct config_profile *config_profile(const struct gw_config *cfg, const char *name);
const struct config_backend *config_backend(const struct gw_config *cfg, const char *name);

/* "digitalSignature" ... -> FG_KU_* bit, 0 if unknown. */
uint32_t config_key_usage_bit(const char *name);

/* The config text `fleetgate init` writes, with listen filled in. malloc'd. */
char *config_default_text(const char *listen);

/* Split an http.listen value ("127.0.0.1:7780", "[::1]:7780", "*:7780")
 * into host ("*" becomes "0.0.0.0") and port. 0, or -1 when malformed. */
int config_http_split(const char *listen, char *host, size_t hostlen, int *port);
/* 1 when host (as config_http_split gives it) is a loopback address:
 * 127.0.0.0/8, ::1 or localhost. */
int config_host_is_loopback(const char *host);

/* The http block `fleetgate init` appends to the config text: enabled on
 * http_listen with the local backend's crl_url/ocsp_url, or commented out
 * when http_listen is NULL or "". malloc'd; NULL when out of memory or
 * http_listen is malformed. */
char *config_http_text(const char *http_listen);

/* The est block `fleetgate init` appends: enabled on est_listen with the
 * server certificate in est/, or commented out when est_listen is NULL or
 * "". malloc'd; NULL when out of memory or est_listen is malformed. */
char *config_est_text(const char *est_listen);

#endif
