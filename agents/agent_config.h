/*
 * agent_config: the agent's config file (see fleetgate-agent.conf.example).
 * INI-like: "key = value" lines, '#' comments, "[slot NAME]" sections.
 */
#ifndef FG_AGENT_CONFIG_H
#define FG_AGENT_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_MAX_SLOTS 64

struct agent_slot {
	char name[64];              /* [A-Za-z0-9_.-]{1,63} */
	int key_type;               /* enum fg_key_type */
	char key[PATH_MAX];         /* absolute after loading */
	char cert[PATH_MAX];
	char chain[PATH_MAX];       /* "" = none */
	mode_t mode;                /* key file mode (certificates are 0644) */
	uid_t uid;                  /* (uid_t)-1 = leave */
	gid_t gid;                  /* (gid_t)-1 = leave */
	char reload[1024];          /* "" = none; run with /bin/sh -c */
	double renew_at;            /* fraction of the lifetime, 0.1 .. 0.95 */
	int line;                   /* line of the [slot NAME] header, for messages */
};

struct agent_config {
	char path[PATH_MAX];
	char bundle[PATH_MAX];
	char state_dir[PATH_MAX];
	int64_t checkin_interval;   /* seconds */
	int64_t request_timeout;    /* seconds */
	char log_level[16];         /* error, warn, info, debug */
	char acme_http01_listen[280]; /* HOST:PORT where ACME http-01 is served, "" none */
	char acme_webroot[PATH_MAX];  /* webroot for ACME http-01 files, "" none */
	int sandbox;                /* enum fg_sandbox_mode (fg_landlock.h); default required */
	struct agent_slot *slots;   /* malloc'd, nslots of them */
	size_t nslots;              /* 1 .. AGENT_MAX_SLOTS */
};

/* Parse path into cfg (which need not be initialised). Relative paths are
 * resolved against the config file's directory. 0, or -1 with
 * "FILE:LINE: what is wrong" in err and cfg left empty.
 * Release with agent_config_clear. */
int agent_config_load(const char *path, struct agent_config *cfg, char *err, size_t errlen);
void agent_config_clear(struct agent_config *cfg);

/* HOST:PORT (host may be [v6]) into host and *port. 0, or -1 when
 * malformed. */
int agent_listen_split(const char *listen, char *host, size_t hostlen, int *port);

/* The slot called name, or NULL. */
const struct agent_slot *agent_config_slot(const struct agent_config *cfg, const char *name);

#endif
