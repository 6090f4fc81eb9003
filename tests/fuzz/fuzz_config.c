/*
 * fuzz_config: the config readers: fleetgated.conf (config_load, from a
 * state directory made once) and the agent's agent.conf
 * (agent_config_load), each from a file holding the input.
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_config.h"
#include "config.h"
#include "fg_log.h"

/* tmpfs: the files are rewritten for every input, and a disk would do the writeback. */
static char dir[] = "/dev/shm/fg-fuzz-config.XXXXXX";
static char gw_path[PATH_MAX], agent_path[PATH_MAX];

static void cleanup(void)
{
	unlink(gw_path);
	unlink(agent_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fg_log_init("fuzz_config", FG_LOG_ERROR, FG_LOG_TEXT);
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(gw_path, sizeof gw_path, "%s/fleetgated.conf", dir);
	snprintf(agent_path, sizeof agent_path, "%s/agent.conf", dir);
	atexit(cleanup);
	return 0;
}

static int put(const char *path, const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	size_t w = fwrite(data, 1, size, f);
	return fclose(f) == 0 && w == size ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[2048];
	if (put(gw_path, data, size) == 0) {
		struct gw_config *cfg = config_load(dir, err, sizeof err);
		config_free(cfg);
	}
	if (put(agent_path, data, size) == 0) {
		struct agent_config ac;
		memset(&ac, 0, sizeof ac);
		if (agent_config_load(agent_path, &ac, err, sizeof err) == 0)
			agent_config_clear(&ac);
	}
	return 0;
}
