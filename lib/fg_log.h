/*
 * fg_log: the one small log module shared by gateway, agent and plugins' host.
 *
 * Each line carries the level, the component and, when known, the request id.
 * Lines go to stderr in the foreground (plain text, or JSON lines when asked)
 * or to syslog when running as a daemon, or to the systemd journal with
 * fields (FLEETGATE_COMPONENT, REQUEST_ID, DEVICE, SERIAL) under systemd. One write(2) per line, so lines from
 * worker threads never interleave. Secrets and key material are never logged.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <stdarg.h>

enum fg_log_level {
	FG_LOG_ERROR,
	FG_LOG_WARN,
	FG_LOG_INFO,
	FG_LOG_DEBUG,
	FG_LOG_LEVEL_MAX
};

enum fg_log_format {
	FG_LOG_TEXT,   /* "2026-11-28T10:00:00Z info gateway[rid] message" */
	FG_LOG_JSON,   /* {"ts":...,"level":...,"component":...,"request_id":...,"msg":...} */
	FG_LOG_SYSLOG, /* syslog(3) with the program name as ident */
	FG_LOG_JOURNAL, /* the systemd journal's native protocol (sd_journal_sendv), with fields */
	FG_LOG_FORMAT_MAX
};

/* Set program name, threshold and output format. Safe to call again. */
void fg_log_init(const char *progname, enum fg_log_level level, enum fg_log_format format);

/* Write to stderr from now on (text instead of syslog; JSON stays JSON):
 * for a process whose seccomp filter forbids opening the syslog socket. */
void fg_log_stderr_only(void);

/* 1 when stderr is the journal's stream (systemd sets JOURNAL_STREAM to
 * its device:inode for a service): log with FG_LOG_JOURNAL then, so that
 * lines keep their fields (systemd.exec(5), "$JOURNAL_STREAM"). */
int fg_log_stderr_is_journal(void);

/* Parse "error", "warn", "info", "debug"; returns -1 for anything else. */
int fg_log_level_parse(const char *s);

/* Log one line. component: "gateway", "zap", "policy", "store", "agent", ...
 * request_id may be NULL. Thread-safe. */
void fg_log(enum fg_log_level level, const char *component, const char *request_id,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void fg_vlog(enum fg_log_level level, const char *component, const char *request_id,
	     const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/* Fields a line may carry besides its request id: in the journal as
 * DEVICE= and SERIAL=, in JSON lines as "device" and "serial". NULL for
 * none. */
struct fg_log_fields {
	const char *device;
	const char *serial;
};
void fg_log_with(enum fg_log_level level, const char *component, const char *request_id,
		 const struct fg_log_fields *fields, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define fg_err(comp, rid, ...)   fg_log(FG_LOG_ERROR, comp, rid, __VA_ARGS__)
#define fg_warn(comp, rid, ...)  fg_log(FG_LOG_WARN, comp, rid, __VA_ARGS__)
#define fg_info(comp, rid, ...)  fg_log(FG_LOG_INFO, comp, rid, __VA_ARGS__)
#define fg_debug(comp, rid, ...) fg_log(FG_LOG_DEBUG, comp, rid, __VA_ARGS__)

#endif
