# frozen_string_literal: true

require "json"
require "zlib"
require "rubygems/package"

module TenantKit
  module Rails
    module Dashboard
      # The archives the backup job wrote: files named like the jobs name them
      # (tenant_<id>_<stamp>.tar.gz), directly in its output directory, regular
      # files (no links), resolved inside that directory. Whose archive it is
      # comes from its manifest (first entry of the archive), not from the name.
      class Archives
        NAME = /\Atenant_[A-Za-z0-9-]+_[A-Za-z0-9]+\.tar\.gz\z/
        MANIFEST_LIMIT = 1 << 20

        Archive = Struct.new(:name, :path, :size, :mtime, keyword_init: true) do
          # Changes when the file is replaced: a dry run vouches for this one.
          def identity = "#{size}:#{mtime.to_r}"

          def tenant_id
            return @tenant_id if defined?(@tenant_id)

            @tenant_id = Archives.manifest_tenant_id(path)
          end
        end

        class NotFound < StandardError; end

        attr_reader :dir

        def initialize(dir)
          @dir = dir.to_s
        end

        # Newest first; `tenant_ids` (nil: all) keeps the given tenants' only.
        def list(tenant_ids: nil)
          return [] unless File.directory?(dir)

          archives = Dir.children(dir).grep(NAME).filter_map { |name| entry(name) }
          archives = archives.select { |a| Archives.tenant_in?(a.tenant_id, tenant_ids) } if tenant_ids
          archives.sort_by { |a| [-a.mtime.to_r, a.name] }
        end

        # The archive of that name, or NotFound (also for another tenant's).
        def find(name, tenant_ids: nil)
          archive = NAME.match?(name.to_s) && entry(name.to_s)
          raise NotFound, "no archive #{name}" unless archive
          raise NotFound, "no archive #{name}" if tenant_ids && !Archives.tenant_in?(archive.tenant_id, tenant_ids)

          archive
        end

        def self.tenant_in?(tenant_id, tenant_ids)
          !tenant_id.nil? && Array(tenant_ids).any? { |id| id.to_s.b == tenant_id.to_s.b }
        end

        # The tenant id the manifest records (Integer, String, or the binary
        # String of a BLOB id); nil for a file that is not an archive.
        def self.manifest_tenant_id(path)
          File.open(path, "rb") do |file|
            Zlib::GzipReader.wrap(file) do |gz|
              Gem::Package::TarReader.new(gz).each do |tar_entry|
                return nil unless tar_entry.full_name == "manifest.json" && tar_entry.size <= MANIFEST_LIMIT

                tenant = JSON.parse(tar_entry.read)["tenant"]
                return tenant.is_a?(Hash) ? TenantKit::Results.tenant_id(tenant["id"]) : nil
              end
            end
          end
          nil
        rescue StandardError
          nil
        end

        private

        def entry(name)
          path = File.join(dir, name)
          stat = File.lstat(path)
          return nil unless stat.file?
          return nil unless File.realpath(path).start_with?("#{File.realpath(dir)}/")

          Archive.new(name: name, path: path, size: stat.size, mtime: stat.mtime)
        rescue SystemCallError
          nil
        end
      end
    end
  end
end
