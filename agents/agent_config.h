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

struct agent_slot {
	char name[64];
	int key_type;               /* enum fg_key_type */
	char key[PATH_MAX];
	char cert[PATH_MAX];
	char chain[PATH_MAX];       /* "" = none */
	mode_t mode;                /* key file mode */
	uid_t uid;                  /* (uid_t)-1 = leave */
	gid_t gid;
	char reload[1024];          /* "" = none */
	double renew_at;            /* fraction of the lifetime */
};

struct agent_config {
	char path[PATH_MAX];
	char bundle[PATH_MAX];
	char state_dir[PATH_MAX];
	int64_t checkin_interval;   /* seconds */
	int64_t request_timeout;    /* seconds */
	char log_level[16];
	struct agent_slot *slots;   /* malloc'd */
	size_t nslots;
};

/* Parse path into cfg. -1 with "FILE:LINE: what" in err. */
int agent_config_load(const char *path, struct agent_config *cfg, char *err, size_t errlen);
void agent_config_clear(struct agent_config *cfg);

#endif
