package etcdtest

import "syscall"

// procAttr kills etcd with the test binary, should the binary die before
// its cleanups run (a timeout panic).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
