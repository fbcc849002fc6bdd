# frozen_string_literal: true

# Builds the native extension tenant_kit/tenant_kit_ext.so when the gem is
# installed. With the rb_sys gem we let it write the Makefile; without it
# (Debian's Ruby has no rb_sys) we write a small Makefile that runs plain
# cargo and installs the library where RubyGems expects it.

begin
  require "rb_sys/mkmf"
rescue LoadError
  RB_SYS = false
else
  RB_SYS = true
end

if RB_SYS
  create_rust_makefile("tenant_kit/tenant_kit_ext")
  return
end

require "rbconfig"

GEM_ROOT = File.expand_path("../..", __dir__)

# cargo from $CARGO, $PATH, or rustup's default place.
def find_cargo
  return ENV["CARGO"] if ENV["CARGO"] && File.executable?(ENV["CARGO"])

  dirs = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR)
  dirs << File.join(Dir.home, ".cargo", "bin") if ENV["HOME"]
  dirs.map { |dir| File.join(dir, "cargo") }.find { |path| File.file?(path) && File.executable?(path) }
end

cargo = find_cargo
unless cargo
  abort <<~MSG
    tenant_kit: cannot build the native extension: `cargo` was not found.
    tenant_kit is written in Rust. Install a Rust toolchain (Rust >= 1.85, for
    example with rustup, or your system's cargo package), make sure `cargo` is
    on PATH (or set CARGO=/path/to/cargo), then install the gem again.
  MSG
end

unless File.exist?(File.join(RbConfig::CONFIG["rubyhdrdir"].to_s, "ruby.h"))
  abort <<~MSG
    tenant_kit: cannot build the native extension: Ruby's C headers are missing
    (no ruby.h in #{RbConfig::CONFIG["rubyhdrdir"]}). Install them (Debian and
    Ubuntu: apt-get install ruby-dev), then install the gem again.
  MSG
end

# Where the build goes: $CARGO_TARGET_DIR if the user set one (kept after the
# install, so later builds reuse it), else a target/ directory next to this
# Makefile that `make install` deletes once the library is installed.
user_target = ENV["CARGO_TARGET_DIR"].to_s
own_target = user_target.empty?
target_dir = own_target ? File.join(Dir.pwd, "target") : File.expand_path(user_target)

# RubyGems points sitearchdir at its staging directory through a siteconf
# file (ext_conf_builder.rb); a plain `ruby extconf.rb && make install`
# installs into Ruby's own site directory.
sitearchdir = RbConfig::CONFIG["sitearchdir"]

File.write("Makefile", <<~MAKEFILE)
  # Written by ext/tenant_kit/extconf.rb: builds tenant_kit_ext.so with plain
  # cargo (release profile) and installs it as tenant_kit/tenant_kit_ext.so.
  SHELL = /bin/sh
  CARGO = #{cargo}
  MANIFEST = #{File.join(GEM_ROOT, "Cargo.toml")}
  export CARGO_TARGET_DIR = #{target_dir}
  # 1: this target dir belongs to the gem build and goes away after install.
  OWN_TARGET_DIR = #{own_target ? 1 : 0}
  LIBRARY = $(CARGO_TARGET_DIR)/release/libtenant_kit_ext.so
  DLLIB = tenant_kit_ext.so
  # RubyGems runs `make DESTDIR= install`; both may be overridden on the command line.
  DESTDIR =
  sitearchdir = #{sitearchdir}
  INSTALL_DIR = $(DESTDIR)$(sitearchdir)/tenant_kit

  all: $(DLLIB)

  # Always ask cargo: it knows whether anything changed.
  $(DLLIB): FORCE
  \t"$(CARGO)" build --release --locked -p tenant_kit_ext --manifest-path "$(MANIFEST)"
  \tcp "$(LIBRARY)" $(DLLIB)

  install: $(DLLIB)
  \tmkdir -p "$(INSTALL_DIR)"
  \tinstall -m 0755 $(DLLIB) "$(INSTALL_DIR)/$(DLLIB)"
  \tif [ "$(OWN_TARGET_DIR)" = 1 ]; then rm -rf "$(CARGO_TARGET_DIR)"; fi

  clean:
  \trm -f $(DLLIB)
  \tif [ "$(OWN_TARGET_DIR)" = 1 ]; then rm -rf "$(CARGO_TARGET_DIR)"; fi

  FORCE:
  .PHONY: all install clean FORCE
MAKEFILE

puts "tenant_kit: wrote a Makefile that builds with #{cargo} (no rb_sys gem)"
