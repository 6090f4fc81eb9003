/*
 * fuzz_state.h: a throwaway gateway state directory for the targets that
 * need a loaded config (fuzz_msg, fuzz_signer_ipc): the embedded default
 * fleetgated.conf, plus whatever files the target adds, in a mkdtemp
 * directory the target removes with fuzz_state_remove once config_load
 * has read it. Any failure aborts: a target that cannot set itself up
 * must not run.
 */
#ifndef FG_FUZZ_STATE_H
#define FG_FUZZ_STATE_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fg_util.h"

/* FILES: paths under the directory, one ending in '/' a directory ("ca/"),
 * NULL-terminated; TEXTS: their contents (unused for directories). */
static inline void fuzz_state_make(char *dir, const char *listen, const char *const *files,
				   const char *const *texts)
{
	char path[PATH_MAX], err[1024];
	if (mkdtemp(dir) == NULL)
		abort();
	char *text = config_default_text(listen);
	snprintf(path, sizeof path, "%s/fleetgated.conf", dir);
	if (text == NULL || fg_write_file_atomic(path, text, strlen(text), 0600, (uid_t)-1, (gid_t)-1, err, sizeof err) != 0)
		abort();
	free(text);
	for (size_t i = 0; files != NULL && files[i] != NULL; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		size_t n = strlen(path);
		if (n > 0 && path[n - 1] == '/') {
			if (mkdir(path, 0700) != 0)
				abort();
		} else if (fg_write_file_atomic(path, texts[i], strlen(texts[i]), 0600, (uid_t)-1, (gid_t)-1,
						err, sizeof err) != 0) {
			abort();
		}
	}
}

/* Removes what fuzz_state_make made (FILES as given to it). */
static inline void fuzz_state_remove(const char *dir, const char *const *files)
{
	char path[PATH_MAX];
	size_t n = 0;
	while (files != NULL && files[n] != NULL)
		n++;
	while (n-- > 0) {               /* files before their directories */
		snprintf(path, sizeof path, "%s/%s", dir, files[n]);
		if (path[strlen(path) - 1] == '/')
			rmdir(path);
		else
			unlink(path);
	}
	snprintf(path, sizeof path, "%s/fleetgated.conf", dir);
	unlink(path);
	rmdir(dir);
}

#endif
