# frozen_string_literal: true

module TenantKit
  # Kept equal to the Rust workspace version (Cargo.toml); a spec checks it.
  VERSION = "0.1.0"
end
