# frozen_string_literal: true

require "json"
require_relative "tenant_kit/version"
require_relative "tenant_kit/errors"

# Load the native extension: a precompiled gem may carry one per Ruby minor
# version, a source install builds exactly one.
begin
  ruby_minor = RUBY_VERSION[/\A\d+\.\d+/]
  require_relative "tenant_kit/#{ruby_minor}/tenant_kit_ext"
rescue LoadError
  require_relative "tenant_kit/tenant_kit_ext"
end

require_relative "tenant_kit/native_call"

# Back up, restore and resolve settings for one tenant of a multi-tenant
# Rails app on SQLite. See README.md for the whole interface.
module TenantKit
  class << self
    # Version of the SQLite library the extension uses at run time. Inside a
    # Rails process it must equal the sqlite3 gem's (one SQLite per process).
    def sqlite_version
      Native.sqlite_version
    end
  end
end
