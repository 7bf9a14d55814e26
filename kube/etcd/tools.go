//go:build tools

// The command this module builds (go.etcd.io/etcd/server/v3 is the etcd main); the blank import
// keeps it in go.mod's requirements.
package tools

import _ "go.etcd.io/etcd/server/v3"
