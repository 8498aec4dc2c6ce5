/* nb_daemon: `nimbus serve`. Parses its flags, takes the data dir's lock, opens the store,
 * starts the HTTP server and the instance manager on one libuv loop, and runs until SIGTERM or
 * SIGINT, then drains and exits 0. Called from main() on the main thread only. */
#ifndef NB_DAEMON_H
#define NB_DAEMON_H

int nb_daemon_main(int argc, char **argv);
/* `nimbus doctor` and `serve --check`: probes the sandbox layers (nb_sbx) without starting
 * anything, prints the table, returns 0 when every layer is available, 1 otherwise. */
int nb_daemon_doctor(void);

#endif
