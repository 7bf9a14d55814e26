//go:build tools

// The command this module builds; the blank import keeps it in go.mod's requirements.
package tools

import _ "github.com/opentofu/opentofu/cmd/tofu"
