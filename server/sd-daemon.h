/* server/sd-daemon.h: the two systemd protocols a service speaks, as
 * sd_notify(3) and sd_listen_fds(3) document them (both are stable and
 * meant to be implemented without libsystemd, which we do not link):
 * readiness notification to $NOTIFY_SOCKET, and sockets passed by
 * socket activation ($LISTEN_FDS from fd 3, for $LISTEN_PID). */
#ifndef NG_SD_DAEMON_H
#define NG_SD_DAEMON_H

/* First fd passed by socket activation. */
#define NG_SD_LISTEN_FDS_START 3

/* Send `state` ("READY=1", "STOPPING=1") to the service manager.
 * Returns 1 when sent, 0 when not run under one (no $NOTIFY_SOCKET),
 * -1 with errno on failure. */
int ng_sd_notify(const char *state);

/* How many sockets socket activation passed us (0 = none), starting at
 * NG_SD_LISTEN_FDS_START; marks them close-on-exec and unsets the
 * LISTEN_* variables, so children do not take them for their own. */
int ng_sd_listen_fds(void);

#endif
