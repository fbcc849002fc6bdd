# frozen_string_literal: true

require "open3"
require "sqlite3"
require "timeout"

# The native extension's machinery: versions, one SQLite per process, the
# panic boundary, GVL release and the progress block (raise, break, GC).
RSpec.describe "TenantKit native extension" do
  let(:extension_path) do
    $LOADED_FEATURES.grep(%r{/tenant_kit_ext\.so\z}).first or raise "tenant_kit_ext.so is not loaded"
  end

  def run!(*command)
    output, status = Open3.capture2e(*command)
    raise "#{command.join(" ")} failed: #{output}" unless status.success?

    output
  end

  describe "versions" do
    it "has VERSION equal to the Cargo workspace version and to the extension's" do
      cargo_toml = File.read(File.join(REPO_ROOT, "Cargo.toml"))
      section = cargo_toml[/^\[workspace\.package\]\n(.*?)(?=^\[|\z)/m, 1] ||
                cargo_toml[/^\[package\]\n(.*?)(?=^\[|\z)/m, 1]
      cargo_version = section[/^version\s*=\s*"([^"]+)"/, 1]

      expect(cargo_version).to match(/\A\d+\.\d+\.\d+/)
      expect(TenantKit::VERSION).to eq(cargo_version)
      expect(TenantKit::Native.version).to eq(cargo_version)
    end
  end

  describe "one SQLite per process" do
    it "loads the extension from this checkout" do
      expect(extension_path).to start_with(File.join(REPO_ROOT, "lib", "tenant_kit"))
    end

    it "defines no sqlite3_* symbols of its own" do
      defined = run!("nm", "-D", "--defined-only", extension_path).lines.map { |line| line.split.last }
      expect(defined).to include("Init_tenant_kit_ext")
      expect(defined.grep(/\Asqlite3_/)).to be_empty
    end

    it "links the system libsqlite3 dynamically" do
      needed = run!("readelf", "-d", extension_path).scan(/\(NEEDED\).*\[(.+)\]/).flatten
      expect(needed.grep(/\Alibsqlite3\.so/)).not_to be_empty
    end

    it "reports the same run-time SQLite version as the sqlite3 gem" do
      gem_version = SQLite3::Database.new(":memory:").get_first_value("select sqlite_version()")
      expect(TenantKit.sqlite_version).to match(/\A3\.\d+\.\d+/)
      expect(TenantKit.sqlite_version).to eq(gem_version)
    end

    it "has exactly one libsqlite3 mapped into the process" do
      SQLite3::Database.new(":memory:").close
      mapped = File.readlines("/proc/self/maps").map { |line| line.split[5] }.compact
      expect(mapped.grep(/libsqlite3/).uniq.size).to eq(1)
    end
  end

  describe "panics" do
    [false, true].each do |without_gvl|
      it "surfaces a panic as TenantKit::InternalError (without_gvl: #{without_gvl}) and keeps working" do
        silence_stderr do
          expect { TenantKit::Native.panic_for_test("boom #{without_gvl}", without_gvl) }
            .to raise_error(TenantKit::InternalError, /boom #{without_gvl}/) { |e| expect(e).to be_a(TenantKit::Error) }
        end

        expect(TenantKit::Native.busy_work(3, 0)).to eq(3)
        expect(TenantKit::Native.version).to eq(TenantKit::VERSION)
      end
    end
  end

  describe "GVL release" do
    # Counts the iterations of another Ruby thread (it sleeps 1 ms each time,
    # so it needs the GVL briefly and often) that fall inside the middle half
    # of a busy_work call sleeping 20 x 10 ms in native code. If the call held
    # the GVL the other thread could not run there at all.
    def other_thread_iterations_during(&call)
      stamps = Queue.new
      stop = false
      other = Thread.new do
        until stop
          stamps << monotonic
          sleep 0.001
        end
      end
      sleep 0.02 until stamps.size >= 3 # the other thread is running
      started = monotonic
      call.call
      finished = monotonic
      stop = true
      other.join
      times = Array.new(stamps.size) { stamps.pop }
      quarter = (finished - started) / 4
      [times.count { |t| t > started + quarter && t < finished - quarter }, finished - started]
    end

    it "lets other threads run during a long call without a block" do
      inside, elapsed = other_thread_iterations_during { TenantKit::Native.busy_work(20, 10) }
      expect(elapsed).to be >= 0.2
      expect(inside).to be >= 20
    end

    it "lets other threads run during a long call that yields to a block" do
      events = 0
      inside, elapsed = other_thread_iterations_during do
        TenantKit::Native.busy_work(20, 10) { |_json| events += 1 }
      end
      expect(events).to eq(22) # start, 20 ticks, done
      expect(elapsed).to be >= 0.2
      expect(inside).to be >= 20
    end
  end

  describe "the progress block" do
    it "receives parsed events through NativeCall" do
      events = []
      result = TenantKit::NativeCall.call(:busy_work, 3, 0) { |event| events << event }

      expect(result).to eq(3)
      expect(events.map { |e| e[:step] }).to eq(%i[start tick tick tick done])
      expect(events[1]).to include(processed: 1, total: 3)
      expect(events).to all(include(at: /\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\z/))
    end

    it "propagates the very exception object raised in the block and stops the work" do
      error_class = Class.new(StandardError)
      error = error_class.new("stop here")
      events = 0
      started = monotonic

      expect do
        TenantKit::Native.busy_work(200, 10) do |_json|
          events += 1
          raise error if events == 3
        end
      end.to raise_error(error_class) { |raised| expect(raised).to equal(error) }

      expect(events).to eq(3)
      expect(monotonic - started).to be < 1.0 # 200 x 10 ms if it had not stopped
    end

    it "returns the value of `break` and stops the work" do
      events = 0
      started = monotonic
      result = TenantKit::Native.busy_work(200, 10) do |_json|
        events += 1
        break :stopped if events == 3
      end

      expect(result).to eq(:stopped)
      expect(events).to eq(3)
      expect(monotonic - started).to be < 1.0
    end

    it "returns the value of `break` through NativeCall" do
      first = TenantKit::NativeCall.call(:busy_work, 200, 10) { |event| break event }
      expect(first).to include(step: :start, total: 200)
    end

    it "lets `throw` leave the call" do
      events = 0
      caught = catch(:halt) do
        TenantKit::Native.busy_work(200, 10) do |_json|
          events += 1
          throw :halt, 42 if events == 2
        end
        :not_thrown
      end

      expect(caught).to eq(42)
      expect(events).to eq(2)
    end

    it "keeps working after a block stopped a call" do
      TenantKit::Native.busy_work(5, 0) { |_json| break }
      expect(TenantKit::Native.busy_work(4, 0) { |_json| nil }).to eq(4)
    end
  end

  describe "under GC.stress" do
    around do |example|
      GC.stress = true
      example.run
    ensure
      GC.stress = false
    end

    it "delivers every event intact to a block" do
      events = []
      TenantKit::NativeCall.call(:busy_work, 25, 0) { |event| events << event }

      expect(events.size).to eq(27)
      expect(events.map { |e| e[:step] }.tally).to eq(start: 1, tick: 25, done: 1)
      expect(events.filter_map { |e| e[:processed] }).to eq((1..25).to_a)
    end

    it "keeps a raised exception alive while the native work stops" do
      # Nothing but the extension references the exception between the raise
      # and its re-raise: it must survive the collections in between.
      error_class = Class.new(StandardError)
      expect do
        TenantKit::Native.busy_work(25, 0) do |json|
          raise error_class, "raised at #{json[/"processed":\d+/]}" if json.include?('"processed":5')
        end
      end.to raise_error(error_class, 'raised at "processed":5')
    end
  end

  describe "interrupts" do
    it "stops promptly when the thread is killed" do
      started = monotonic
      worker = Thread.new { TenantKit::Native.busy_work(1000, 10) } # 10 s
      sleep 0.2
      expect(worker).to be_alive # still working: this thread got to run meanwhile

      worker.kill
      expect(worker.join(5)).not_to be_nil
      expect(monotonic - started).to be < 1.5
      expect(worker).not_to be_alive
    end

    it "stops promptly when the thread is killed while yielding to a block" do
      ticks = 0
      started = monotonic
      worker = Thread.new { TenantKit::Native.busy_work(1000, 10) { |_json| ticks += 1 } } # 10 s
      wait_until { ticks >= 3 }
      expect(worker).to be_alive

      worker.kill
      expect(worker.join(5)).not_to be_nil
      expect(monotonic - started).to be < 2.0
      expect(ticks).to be < 200
    end

    it "stops promptly on Timeout.timeout" do
      started = monotonic
      expect { Timeout.timeout(0.2) { TenantKit::Native.busy_work(1000, 10) } }.to raise_error(Timeout::Error)
      expect(monotonic - started).to be < 1.5
      expect(TenantKit::Native.busy_work(2, 0)).to eq(2)
    end
  end
end
