# frozen_string_literal: true

module TenantKit
  module Rails
    # TenantKit.backup / restore name their options (`archive:`,
    # `tenant_id:`); the jobs' callers know the jobs' arguments
    # (`archive_path:`, `tenant:`). An ArgumentError about an option the job
    # fills from one of its arguments is told in the argument's name.
    module ArgumentNames
      JOB_ARGUMENTS = { "archive" => "archive_path", "tenant_id" => "tenant" }.freeze

      module_function

      def in_job_terms(error)
        return error unless error.instance_of?(::ArgumentError)

        option, rest = error.message.split(": ", 2)
        name = JOB_ARGUMENTS[option]
        return error unless name && rest

        renamed = ::ArgumentError.new("#{name}: #{rest}")
        renamed.set_backtrace(error.backtrace)
        renamed
      end
    end
  end
end
