// Command pause is the sandbox ("pause") container of the dev environment's node: the
// process that holds each Pod's namespaces while the Pod's containers come and go.
// containerd's CRI needs an image for it (sandbox_image), and no registry is reachable
// here, so devenv/images.py builds this one: a static binary in an otherwise empty image.
//
// It does what registry.k8s.io/pause does: as PID 1 of the Pod it waits until it is
// asked to stop (SIGTERM from the runtime, SIGINT by hand) and exits 0, and meanwhile it
// reaps any zombie re-parented to it (with a shared PID namespace, processes of the
// Pod's containers whose parents die become its children).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Buffered: signal.Notify drops signals it cannot deliver at once; several SIGCHLDs
	// arriving together collapse into one wakeup, which is fine since reap() loops.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every child that has exited, without blocking on those still running.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
