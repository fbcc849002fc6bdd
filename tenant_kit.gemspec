# frozen_string_literal: true

require_relative "lib/tenant_kit/version"

Gem::Specification.new do |spec|
  spec.name = "tenant_kit"
  spec.version = TenantKit::VERSION
  spec.authors = ["tenant_kit authors"]
  spec.summary = "Back up, restore and resolve settings for one tenant of a multi-tenant Rails app on SQLite"
  spec.description = <<~DESC.tr("\n", " ").strip
    A Rust core with a Ruby native extension: per-tenant backup into a portable
    archive, atomic restore (dry run, purge, tenant remap), archive
    verification and settings resolution, with progress reported to a block.
    Builds from source with cargo; the rb_sys gem is used when present but not needed.
  DESC
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir.chdir(__dir__) do
    Dir[
      "lib/**/*.rb", "lib/tenant_kit/rails/dashboard/**/*", "exe/*",
      "ext/tenant_kit/extconf.rb", "ext/tenant_kit/Cargo.toml", "ext/tenant_kit/src/**/*",
      "Cargo.toml", "Cargo.lock", "src/**/*", "include/**/*",
      "LICENSE", "README.md", "CHANGELOG.md"
    ].select { |path| File.file?(path) }.sort
  end
  spec.require_paths = ["lib"]
  spec.bindir = "exe"
  spec.executables = ["tenant_kit"]
  spec.extensions = ["ext/tenant_kit/extconf.rb"]
end
